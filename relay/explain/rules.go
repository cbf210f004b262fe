package explain

// rule is one text pattern: when match reports true, the reply belongs to
// cat and advise (or adv) says what it means.
type rule struct {
	cat    Category
	match  func(t *text) bool
	adv    advice
	advise func(t *text) advice // optional, overrides adv
}

// classify runs the rules in order, then falls back to the enhanced code,
// then to the basic code.
func classify(t *text) (Category, advice) {
	if t.code >= 200 && t.code < 400 || t.code == 0 && t.eClass == 2 {
		return Accepted, advAccepted
	}
	for _, r := range rules {
		if r.match(t) {
			if r.advise != nil {
				return r.cat, r.advise(t)
			}
			return r.cat, r.adv
		}
	}
	if cat, adv, ok := byEnhanced(t); ok {
		return cat, adv
	}
	return byCode(t)
}

// rules are tried in order: Sluice's own wording first (it is exact), then
// the specific signals of the large receivers, then broader words. The order
// matters where texts overlap, e.g. Gmail's authentication refusal says
// "to protect our users from spam", a greylisting server says it is
// "reducing spam", Gmail's 4.7.28 speaks of "unsolicited mail" but is a rate
// limit: those must be caught before the spam rule.
var rules = []rule{
	// Sluice's own replies (submit and screen).
	{cat: TempFailure, adv: advTemp, match: func(t *text) bool {
		return t.has("temporary authentication failure", "short of disk space", "connection broke during data")
	}},
	{cat: TempFailure, adv: advDataTimeout, match: func(t *text) bool { return t.has("timed out waiting for the message data") }},
	{cat: TempFailure, adv: advIdle, match: func(t *text) bool {
		return t.has("idle timeout", "idle for too long") || t.has("no command for") && t.has("closing the connection")
	}},
	// Their advice names ports and STARTTLS, which the TLS rule would take.
	{cat: Malformed, adv: advTooManyErrors, match: func(t *text) bool { return t.has("too many bad commands") }},
	{cat: Malformed, adv: advClientSetup, match: func(t *text) bool { return t.has("set up for smtp submission") }},
	// Encryption and a busy server: their texts also mention logins and
	// connections, which the rules below would take differently.
	{cat: TLSRequired, advise: adviseTLS, match: func(t *text) bool {
		return t.has("starttls", "tls required", "requires tls", "require tls", "tls is required", "must use tls",
			"tls needed", "encryption required", "encryption needed", "requiretls", "tls negotiation failed",
			"tls handshake", "secure connection required", "ssl required", "mta-sts", "tls not available", "x509:")
	}},
	{cat: TempFailure, adv: advBusy, match: func(t *text) bool {
		return t.has("too busy", "server is busy", "server busy", "currently busy")
	}},
	// Sluice's own replies, continued.
	{cat: Login, advise: adviseLockout, match: func(t *text) bool { return t.has("too many failed logins") }},
	{cat: Login, adv: advLoginDisabled, match: func(t *text) bool {
		return t.has("suspended for suspected abuse") || t.has("login ") && t.has(" is disabled", " is suspended")
	}},
	{cat: Login, adv: advMechanism, match: func(t *text) bool {
		return t.has("malformed auth", "authentication mechanism", "authorization identity")
	}},
	{cat: Sender, adv: advSenderOwned, match: func(t *text) bool { return t.has("is not an address of login") }},
	{cat: Sender, adv: advNullSender, match: func(t *text) bool { return t.has("null sender") }},
	{cat: Policy, adv: advWebForm, match: func(t *text) bool {
		return t.has("web-form loop", "self-addressed form messages")
	}},
	{cat: Policy, adv: advLoop, match: func(t *text) bool {
		return t.has("forward loop", "form or script in a loop", "mail loop", "loop detected", "looping", "hop count", "too many hops", "routing loop")
	}},
	{cat: RateLimited, adv: advOwnQuota, match: func(t *text) bool { return t.has("has sent its") && t.has("this hour") }},
	{cat: Spam, adv: advOwnScanner, match: func(t *text) bool { return t.has("content scanner judged", "content scanner rated") }},
	{cat: RateLimited, adv: advOwnScannerDefer, match: func(t *text) bool { return t.has("content scanner deferred") }},
	{cat: BlockList, adv: advDirectIP, match: func(t *text) bool {
		return t.has("not authorized to send email directly", "dynamic ip", "dynamic address", "residential ip",
			"end-user ip", "policy block list", "dial-up", "dialup")
	}},
	{cat: BlockList, advise: adviseBlockList, match: func(t *text) bool { return t.has("which the block list") }},
	{cat: UnknownMailbox, adv: advBadAddress, match: func(t *text) bool {
		return t.has("recipient address is not valid", "invalid recipient address", "bad recipient address syntax")
	}},
	{cat: UnknownMailbox, adv: advSuppressed, match: func(t *text) bool { return t.has("sluice suppresses") }},
	{cat: Sender, adv: advSenderSyntax, match: func(t *text) bool {
		return t.has("mail from address is not a valid", "bad sender address syntax", "invalid sender address")
	}},
	{cat: Sender, adv: advSenderLogin, match: func(t *text) bool {
		return t.has("not valid for your login", "not owned by user", "sender login mismatch", "not allowed to send as")
	}},

	// Authentication of the sending domain and server.
	{cat: Authentication, advise: adviseAuth, match: func(t *text) bool {
		return t.has("dmarc", "dkim", "domainkeys", "sender policy framework", "designated as permitted sender",
			"unauthenticated", "authentication information", "authentication checks", "authentication check",
			"fails to pass authentication", "sender agreement", "arc validation",
			"reverse dns", "reverse-dns", "rdns", "reverse lookup", "reverse hostname", "cannot find your hostname",
			"helo command rejected", "bad helo", "invalid helo") ||
			t.word("spf", "ptr")
	}},

	// Block lists named, or a listing said in so many words.
	{cat: BlockList, advise: adviseBlockList, match: func(t *text) bool {
		return findList(t) != nil ||
			t.has("block list", "blocklist", "blacklist", "black list", "denylist", "deny list", "dnsbl",
				"realtime blackhole", "banned sending ip", "banned sender", "reported as a source of spam",
				"blocked using", "found in a dns", "listed at", "listed on") ||
			t.word("rbl") ||
			t.eClass == 5 && t.eSubj == 7 && (t.eDetail >= 606 && t.eDetail <= 649 || t.eDetail == 708 || t.eDetail == 511 || t.eDetail == 513)
	}},

	// Broken messages and commands.
	{cat: Malformed, adv: advSmuggling, match: func(t *text) bool {
		return t.has("bare cr", "bare lf", "bare <lf>", "bare <cr>", "smuggling", "nul byte", "null byte", "bare linefeed", "bare newline")
	}},
	{cat: Malformed, adv: advLongLine, match: func(t *text) bool {
		return t.has("longer than 998", "line too long", "line is too long", "too long line", "line length") && !t.has("header field", "header line")
	}},
	{cat: Malformed, adv: advHeaders, match: func(t *text) bool {
		return t.has("rfc 5322", "rfc5322", "rfc 2822", "rfc2822", "rfc 822", "not rfc", "from header", "from headers",
			"sender header", "header is missing", "missing header", "invalid header", "duplicate header", "header section",
			"folded line", "message-id", "longer than 998", "line too long", "line is too long", "line length")
	}},
	{cat: Malformed, adv: advProtocol, match: func(t *text) bool {
		return t.has("syntax error", "command unrecognized", "unrecognized command", "not implemented", "bad sequence",
			"invalid command", "too many invalid commands", "malformed", "invalid address", "unknown command", "out of sequence")
	}},

	// Relaying and logging in.
	{cat: Policy, adv: advRelay, match: func(t *text) bool {
		return t.has("relay access denied", "relaying denied", "relay denied", "relay not permitted", "not permitted to relay",
			"relaying not allowed", "relay not allowed", "unable to relay", "we do not relay", "relaying", "relay access",
			"attempting to send to a non-local", "send to remote domains", "not permitted to send to remote")
	}},
	{cat: Login, advise: adviseLogin, match: func(t *text) bool {
		return t.has("authentication required", "requires authentication", "authentication is required", "must authenticate",
			"authentication failed", "auth failed", "authentication unsuccessful", "invalid credentials", "bad credentials",
			"password not accepted", "incorrect password", "wrong password", "invalid login", "login failed", "not logged in",
			"not authenticated", "smtpclientauthentication", "smarthost refused our login", "access to this user account") ||
			t.has("account has been disabled", "account is disabled") && (t.code == 504 || t.code == 535 || t.enhIs(7, 8) || t.enhIs(7, 13))
	}},

	// The sender address.
	{cat: Sender, adv: advSender, match: func(t *text) bool {
		return t.has("sender address rejected", "sender rejected", "sender verify failed", "sender verification",
			"could not verify sender", "unverified sender", "sender domain", "domain of sender", "sender is not allowed",
			"not owned by user", "domain you are sending from", "sender not allowed", "invalid sender", "unknown sender",
			"sender address is not valid")
	}},

	// Volume: greylisting, rate limits, sending quotas, recipients per message.
	{cat: RateLimited, adv: advGreylist, match: func(t *text) bool {
		return t.has("greylist", "graylist", "grey list", "gray list", "grey-list", "gray-list", "[gl01]", "postgrey")
	}},
	{cat: RateLimited, advise: adviseRate, match: func(t *text) bool {
		return t.has("rate limit", "rate-limit", "ratelimit", "too many messages", "too many mails", "too many emails",
			"too many connections", "too many concurrent", "too many sessions", "sending rate", "unusual rate", "exceeded the rate",
			"permitted limits", "message rate", "[tss04]", "unexpected volume", "throttl", "slow down",
			"sending quota", "sending limit", "send limit", "daily limit", "hourly limit", "daily quota", "hourly quota",
			"messages per hour", "messages per day") ||
			t.enhIs(7, 28) || t.eClass == 5 && t.eSubj == 7 && t.eDetail >= 700 && t.eDetail <= 707
	}},
	{cat: RateLimited, adv: advTooManyRcpt, match: func(t *text) bool {
		return t.has("too many recipients", "recipient limit", "maximum number of recipients", "max recipients",
			"too many rcpt", "recipients per message", "number of recipients")
	}},

	// The recipient's mailbox.
	{cat: MailboxFull, advise: adviseFull, match: func(t *text) bool {
		return t.has("mailbox full", "mailbox is full", "inbox is full", "mailbox has exceeded", "mailbox size limit",
			"over quota", "overquota", "over its quota", "over the quota", "quota exceeded", "exceeded storage allocation",
			"storage allocation", "out of storage", "storage space", "mailbox quota", "user quota", "disk quota", "quota full",
			"exceeds quota", "exceed quota", "exceeds its quota") ||
			t.has("insufficient storage") && !t.has("system")
	}},
	{cat: UnknownMailbox, adv: advMS541, match: func(t *text) bool {
		return t.has("recipient address rejected: access denied") && t.enhIs(4, 1)
	}},
	{cat: UnknownMailbox, adv: advDisabled, match: func(t *text) bool {
		return t.has("account that you tried to reach is disabled", "account is disabled", "mailbox is disabled",
			"mailbox disabled", "account has been disabled", "account disabled", "mailbox is inactive", "account is inactive",
			"inactive user", "inactive account", "no longer active", "no longer in use")
	}},
	{cat: UnknownMailbox, adv: advNoDomain, match: func(t *text) bool {
		return t.has("no mail server", "does not accept mail", "null mx", "domain not found", "domain does not exist",
			"no such domain", "host not found", "host or domain name not found", "unrouteable domain", "no mx record")
	}},
	{cat: UnknownMailbox, adv: advMoved, match: func(t *text) bool {
		return t.has("user not local", "not local; please try", "has moved", "no longer at this address")
	}},
	{cat: UnknownMailbox, adv: advNoUser, match: func(t *text) bool {
		return t.has("user unknown", "unknown user", "unknown recipient", "recipient unknown", "no such user",
			"no such recipient", "no such mailbox", "no such address", "does not exist", "doesn't exist", "do not exist",
			"recipient not found", "recipientnotfound", "recipnotfound", "address not found", "mailbox not found", "user not found",
			"invalid recipient", "invalid mailbox", "unrouteable address", "unroutable address", "not our customer",
			"no mailbox", "not a valid mailbox", "address unknown", "unknown address", "nosuchuser") ||
			t.has("mailbox unavailable", "mailbox not available") && !t.temporary()
	}},

	// Reputation, when no list is named.
	{cat: BlockList, advise: adviseBlockList, match: func(t *text) bool {
		return t.has("reputation", "traffic not accepted", "poor reputation") ||
			t.has("block", "banned", "denied", "refused") && !t.has("connection refused") && t.has(" ip ", "ip address", "client host", "your network", "your ip", "sending ip", "from ip")
	}},

	{cat: TooBig, adv: advTooBig, match: func(t *text) bool {
		return t.has("too big", "too large", "size exceeds", "exceeds size", "message size", "size limit", "maximum size",
			"exceeds the maximum", "maximum message size", "message exceeds", "message length exceeds", "exceeded max",
			"exceeds the limit of", "exceeds the size")
	}},

	{cat: Spam, advise: adviseSpam, match: func(t *text) bool {
		return t.word("spam", "junk", "bulk") || t.has("unsolicited", "phishing", "virus", "malware", "infected", "suspicious",
			"content rejected", "message content", "content filter", "security issue", "security risk", "blocked file type",
			"file type", "attachment", "high probability", "spamassassin", "rspamd", "spam score", "spammy", "scored")
	}},

	{cat: Policy, adv: advPolicy, match: func(t *text) bool {
		return t.has("policy", "not allowed", "not permitted", "prohibited", "access denied", "administrative",
			"not authorized", "unauthorized", "refused", "rejected by", "forbidden", "external forwarding", "restricted") &&
			t.permanent()
	}},

	// Greylisting said only as "try again later" with the usual codes.
	{cat: RateLimited, adv: advGreylist, match: func(t *text) bool {
		return t.has("try again later", "try later", "please retry", "try again in") && !t.has("busy", "error", "failure", "storage", "processing") &&
			(t.enh == "4.7.1" || t.eClass == 0 && (t.code == 450 || t.code == 451))
	}},

	{cat: TempFailure, advise: adviseTemp, match: func(t *text) bool {
		return !t.permanent() && t.has("busy", "temporar", "try again", "try later", "service not available",
			"service unavailable", "closing transmission channel", "closing connection", "error in processing",
			"local error", "system storage", "timeout", "timed out", "connection refused", "connection reset",
			"cannot connect", "could not connect", "closed the connection", "no route", "unreachable", "lookup", "dns", "eof", "broken pipe",
			"greeting", "i/o", "resource", "congestion", "overloaded", "shutting down", "not available")
	}},
}
