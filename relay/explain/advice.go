package explain

// advice is what a reply means and what to do about it.
type advice struct{ meaning, action string }

const dnsCheck = "`sluice dns check DOMAIN`"

var (
	advAccepted = advice{
		"The server accepted the command or the message; this is not an error.",
		"Nothing to do."}

	// Authentication of the sending domain and server.
	advSPF = advice{
		"The receiving server checked the SPF record of the sender's domain and the server that delivered the message is not in it, so the mail looked forged.",
		"Add the relay's address to the SPF record of your domain (one include: or ip4:/ip6: entry in the single SPF record); " + dnsCheck + " shows the exact fix."}
	advDKIM = advice{
		"The message had no DKIM signature the receiver could verify for the sender's domain: the signature was missing, the published key did not match, or the message was changed on the way.",
		"Publish the DKIM key Sluice signs with in your domain's DNS and keep anything from rewriting the message after sending; " + dnsCheck + " shows the record to publish."}
	advDMARC = advice{
		"The sender's domain publishes a DMARC policy and the message passed neither SPF nor DKIM for the domain in its From address, so the receiver applied that policy and refused it.",
		"Make SPF include the relay and publish the DKIM key, so that at least one passes for the From domain; a web form must send From an address of your own domain, never the visitor's. " + dnsCheck + " lists what is missing."}
	advPTR = advice{
		"The sending server's IP address has no reverse DNS (PTR) name, or that name does not lead back to the address or to the name the server introduced itself with; Gmail and others refuse such mail, over IPv6 in particular.",
		"This is for whoever runs the relay: set a PTR record for the relay's IP at the hosting provider that names the relay's hostname, and make that hostname resolve to the same IP; " + dnsCheck + " checks it."}
	advAuthGeneric = advice{
		"The receiving server could not confirm that the sender's domain really sent this message: neither SPF nor DKIM passed, and the large mailbox providers refuse unauthenticated mail.",
		"Publish an SPF record that includes the relay, the DKIM key Sluice signs with and a DMARC record; " + dnsCheck + " shows the exact records. Then send again."}

	// Volume.
	advGreylist = advice{
		"The receiving server uses greylisting: it turns away the first attempt from a sender it does not know yet, on purpose, and accepts a retry a few minutes later.",
		"Nothing to do: a real mail server, Sluice's relay included, retries on its own. Only if delivery still fails after an hour or more, ask the recipient's administrator to allowlist the sending server."}
	advRate = advice{
		"The receiving server limits how much mail it takes from this sender or IP address in a given time, and that limit was reached.",
		"Send less at once: spread large mailings over time or send newsletters through a mailing-list service; a temporary refusal is retried on its own."}
	advGmailRate = advice{
		"Gmail saw an unusual amount of mail it considers unwanted coming from the sending IP address and is accepting less from it for now.",
		"Check the sites and logins behind the relay for spam or an abused form, mail only people who asked for it, and publish SPF, DKIM and DMARC; Gmail lifts the limit as the address's reputation recovers."}
	advYahooVolume = advice{
		"Yahoo deferred the mail because of unusual volume from this IP address or complaints from its users about mail from it.",
		"Lower the volume, remove recipients who did not ask for the mail and make unsubscribing easy; Yahoo takes mail again once complaints drop, and the relay retries on its own."}
	advSendQuota = advice{
		"The sending account has used up its sending allowance for the period (an hourly or daily limit of the server it sends through).",
		"Wait for the period to pass, then send again; if the volume is legitimate ask the provider or administrator to raise the limit, and check that no form or script is sending in bulk."}
	advOwnQuota = advice{
		"Your login (or your domain) has sent its hourly quota through Sluice, so Sluice deferred this message.",
		"Send again after the time given in the reply (a mail program retries by itself); if the volume is legitimate, ask the Sluice administrator to raise the quota (`sluice user set ADDRESS --quota N`)."}
	advTooManyRcpt = advice{
		"The message had more recipients than the server accepts in one message.",
		"Send to fewer recipients per message (split the list into batches); the recipients refused for this reason can get the same text in another message."}
	advOwnScannerDefer = advice{
		"Sluice's content scanner put this message off for now (greylisting, or a score just short of refusal).",
		"Send again in a few minutes; if it keeps being deferred, change what the scanner objects to (named in the reply) or ask the Sluice administrator."}

	// Content.
	advSpam = advice{
		"A content filter judged the message itself (its text, links or attachments) to be spam or dangerous and refused it.",
		"Change what triggers it: no link shorteners or links to unfamiliar sites, no executable or macro attachments, real text rather than one large image; if a web form sent it, make sure bots cannot abuse the form (add a captcha)."}
	advAttachment = advice{
		"The message was refused because of an attachment whose type is one that malware uses and receivers refuse.",
		"Share the file as a download link instead, or send it in a harmless format; renaming or zipping a program file does not help."}
	advOwnScanner = advice{
		"Sluice's content scanner scored this message as spam and refused it before sending it anywhere.",
		"Remove what the reply names as the trigger and send again; if it is an ordinary message, ask the Sluice administrator to look at the scanner's result for it."}

	// The recipient.
	advNoUser = advice{
		"The receiving server says this mailbox does not exist (or no longer exists) at that domain.",
		"Check the address for typos and ask the recipient for the right one; do not retry the same address, since repeated mail to unknown mailboxes harms your domain's reputation."}
	advNoDomain = advice{
		"The recipient's domain does not exist or does not take mail: DNS names no mail server for it, or it publishes a null MX.",
		"Check the part after the @ for typos (gmial.com, example.con); do not retry until the address is corrected."}
	advSuppressed = advice{
		"Sluice did not send this: the address bounced as unknown before, and Sluice holds back mail to it for a while to protect your domain's reputation.",
		"Check the address with the recipient; if it works again, the Sluice administrator can lift the hold with `sluice suppress delete ADDRESS`."}
	advDisabled = advice{
		"The recipient's mailbox exists but is disabled or inactive, so it takes no mail.",
		"Reach the recipient some other way and ask for a current address; do not retry this one."}
	advMoved = advice{
		"This server does not handle the recipient (551, user not local); the reply may name the address to use instead.",
		"If the reply names another address, send to that one; otherwise confirm the address with the recipient. Do not retry it unchanged."}
	advMS541 = advice{
		"Microsoft 365 refused the recipient: the address is not in the receiving organisation's directory, or that domain is not set up to receive mail there.",
		"Check the address for typos and confirm it with the recipient; if it is right, their administrator has to fix the mailbox or the domain's setup in Microsoft 365."}
	advBadAddress = advice{
		"The recipient address is not a valid e-mail address (wrong form or characters that are not allowed).",
		"Correct the address (the form is name@example.com, without spaces) and send again."}
	advFull = advice{
		"The recipient's mailbox is full (over its storage quota), so the server cannot take new mail for now.",
		"Nothing is wrong on your side; let the recipient know by other means that their mailbox is full. Sluice retries a temporary refusal on its own."}
	advFullPermanent = advice{
		"The recipient's mailbox is full (over its storage quota) and the server refused the message for good.",
		"Let the recipient know by other means that their mailbox is full, and send the message again once they have made room."}

	// Size.
	advTooBig = advice{
		"The message is larger than the receiving server accepts; attachments grow by about a third when sent by mail.",
		"Send large files as a download link instead of attachments, or shrink images before attaching them; sending it again unchanged fails the same way."}

	// Policy.
	advRelay = advice{
		"The server refused to pass the message on to another domain: it only takes mail for its own domains, or from senders who have logged in.",
		"For your own sending, turn on SMTP authentication in the mail program or plugin and log in (port 587 or 465). If a remote server said this, its domain's MX records may point to the wrong server: tell the recipient."}
	advLoop = advice{
		"The message went round in a loop (a forward that points back, an autoresponder answering itself, or a form or script sending the same mail again and again), so it was stopped.",
		"Check the forwarding rules, autoresponders and form plugins involved and remove the one that sends the mail back; copies held by Sluice are released by its administrator."}
	advWebForm = advice{
		"Sluice stopped a web-form message sent from and to the same address: receivers treat such mail as forged, and a looping form can flood the mailbox.",
		"Let the form send from a separate address of your domain (for example form@yourdomain) to your usual address, with the visitor's address in Reply-To."}
	advPolicy = advice{
		"The receiving side refused the message under a local rule, for example about who may write to that recipient or group, or about the sender or the content.",
		"Read the rest of the reply for the rule; check that the sender and recipient addresses are right, and if the mail is legitimate ask the recipient to have their administrator allow it."}

	// Sender and login.
	advSenderOwned = advice{
		"Sluice refused the sender address: the login you authenticated with may not send as that address.",
		"Send from the address you log in with (in WordPress, set the SMTP plugin's From address to it), or ask the Sluice administrator to grant the address to your login (`sluice user set LOGIN --grant ADDRESS`)."}
	advNullSender = advice{
		"The empty sender address (MAIL FROM:<>) is reserved for bounces and may not be used to submit mail.",
		"Set a real sender address, the mailbox you log in with, in the mail program, plugin or script."}
	advSenderSyntax = advice{
		"The sender address (MAIL FROM) is not a well-formed e-mail address.",
		"Set the sender address in the mail program, plugin or script to a full address such as name@example.com, the mailbox you log in with."}
	advSenderLogin = advice{
		"The server refused the sender address because the account you logged in with may not send as that address.",
		"Send from the address of the account you log in with, or ask that server's administrator to allow the other address for your login."}
	advSender = advice{
		"The server refused the sender address: it is malformed, its domain does not exist or cannot receive mail, or that sender may not send there.",
		"Send from a real address of a domain that exists and receives mail (an invented no-reply domain fails); if only this recipient refuses, ask them to allow your address."}
	advLoginRequired = advice{
		"The server wants a login (SMTP authentication) before it takes mail to send on.",
		"Turn on authentication in the mail program or WordPress SMTP plugin: the full mailbox address as username and its password, over TLS on port 587 or 465."}
	advLoginFailed = advice{
		"The login was refused: the username or the password is wrong, or the account may not log in this way.",
		"Use the full mailbox address as username and retype the password (reset it if unsure); Gmail and Microsoft 365 accounts may need an app password or SMTP AUTH switched on."}
	advLockout = advice{
		"Too many failed logins in a short time, so logins for this account or from this address are blocked for a while.",
		"Wait until the time in the reply, then log in with the right password; a program or plugin that keeps trying an old password must be updated first."}
	advLockoutIP = advice{
		"Too many failed logins came from your IP address in a short time, so every login from that address is refused for a while, whatever the account.",
		"Correct the saved password in every mail program, phone, printer and plugin that sends from that address (one device with an old password keeps the block going), then log in again after the time in the reply."}
	advLoginDisabled = advice{
		"The login exists but is disabled or suspended, so it cannot send.",
		"Ask the mail administrator (named in the reply, if any) to check the account and enable it; after a suspension for abuse, change the password and check the site for compromise first."}
	advMechanism = advice{
		"The mail program tried a login method the server does not offer, or sent a broken login exchange.",
		"Let the program use AUTH PLAIN or LOGIN over TLS (in WordPress SMTP plugins: TLS and normal username and password), and leave any authorization identity field empty."}

	// Encryption.
	advTLSNeeded = advice{
		"The server only accepts this (a login, or mail) over an encrypted connection, and the connection was not encrypted.",
		"In the mail program or WordPress SMTP plugin choose STARTTLS/TLS on port 587 or SSL/TLS on port 465, then send again."}
	advTLSFailed = advice{
		"An encrypted connection to the receiving server could not be set up: its certificate or TLS setup failed, or its MTA-STS policy requires TLS it did not provide.",
		"Nothing to change in the message; delivery is retried. If it persists, the recipient's administrator has to fix the server's certificate or TLS setup; the relay's delivery log has the details."}

	// Format.
	advSmuggling = advice{
		"The message contains a bare CR or LF line ending or a NUL byte; servers refuse these because they make SMTP smuggling possible.",
		"Update the program, plugin or script that sends the mail so that every line ends in CRLF; binary content belongs in a base64 attachment."}
	advLongLine = advice{
		"A line of the message is longer than the 998 characters SMTP allows (RFC 5322 2.1.1); servers refuse such mail or break it.",
		"Make the sending program or plugin wrap long lines or encode the body as quoted-printable or base64 (PHPMailer does so when Encoding is set to quoted-printable or base64)."}
	advDirectIP = advice{
		"The receiver treats the sending server's IP address as one that should not deliver mail directly: an end-user, dynamic or cloud address on a policy list such as Spamhaus PBL, or one without proper reverse DNS.",
		"This is for whoever runs the relay: send from an address meant for mail (static, with a PTR record naming the relay's hostname) or through a smarthost; the sender of the message cannot fix it."}
	advHeaders = advice{
		"The message's header is incomplete or broken, for example no From, several From headers, an address the receiver cannot read, or an overlong line.",
		"The plugin or script that builds the mail has to set exactly one From (in the form Name <you@example.com>) and well-formed headers; the reply names the defect."}
	advClientSetup = advice{
		"The server did not understand what the mail client sent: the client is most likely set up for the wrong port or encryption (SSL/TLS on port 587, plain text on port 465) or for another protocol than SMTP submission.",
		"Check the outgoing server settings in the mail program or plugin: port 587 with STARTTLS or port 465 with SSL/TLS, and authentication with the full mailbox address; then send again."}
	advTooManyErrors = advice{
		"The server closed the connection after several commands it could not accept: the mail client is most likely set up for the wrong port or encryption, or does not speak SMTP submission to this server.",
		"Check the outgoing server settings in the mail program or plugin (server name, port 587 with STARTTLS or port 465 with SSL/TLS, authentication with the full mailbox address), then connect again."}
	advProtocol = advice{
		"The mail program sent a command the server did not understand, with bad syntax, or in the wrong order.",
		"Usually a bug in the program or plugin, or a connection cut off midway: update it, check its SMTP settings and send again."}

	// Temporary trouble.
	advTemp = advice{
		"The server had a temporary problem (overloaded, short of resources, or an internal error) and asked to try again later.",
		"Nothing to change: the message is retried automatically; if it keeps failing for hours, the administrator of that server should look at it."}
	advBusy = advice{
		"The server is too busy right now (too many connections at once) and asked to come back later.",
		"Nothing to change: the message is retried automatically after a short wait."}
	advIdle = advice{
		"The server closed the connection because the client waited too long between commands (the server's idle timeout); nothing was wrong with the login or the message.",
		"Connect again and send; if it keeps happening, make the program or script connect just before it sends rather than holding the connection open between messages, and check for a proxy, firewall or antivirus that stalls the connection."}
	advDataTimeout = advice{
		"The client stopped sending the message part-way: no data came for the server's data timeout, so the server gave up and the message was not sent.",
		"Send it again; if it keeps happening, check the network connection (a slow or unstable upload, an antivirus or proxy that holds the data back), or send large files as a download link."}
	advNetwork = advice{
		"There was no SMTP answer: the receiving server could not be reached (a DNS lookup, connection or timeout problem).",
		"Usually temporary and retried automatically; if it persists, check the recipient's domain for typos or ask its administrator whether their mail server is down."}

	// Nothing recognised.
	advUnknownPermanent = advice{
		"The server refused the message for good, but the reply does not say why in a way Sluice recognises.",
		"Read the full reply for a hint or a link, check the recipient address, and if that does not help ask the recipient's administrator, quoting the reply."}
	advUnknownNoCode = advice{
		"This does not look like an SMTP reply Sluice recognises.",
		"Paste the whole reply line from the bounce, including the three-digit code (such as 550 5.1.1 ...)."}
)

func adviseAuth(t *text) advice {
	spf := t.word("spf") || t.has("sender policy framework", "designated as permitted sender") || t.enhIs(7, 23) || t.enhIs(7, 24)
	dkim := t.has("dkim", "domainkeys") || t.eSubj == 7 && t.eDetail >= 20 && t.eDetail <= 22
	switch {
	case t.has("dmarc"):
		return advDMARC
	case spf && dkim:
		return advAuthGeneric
	case spf:
		return advSPF
	case dkim:
		return advDKIM
	case t.word("ptr") || t.has("reverse", "rdns", "hostname", "helo") || t.enhIs(7, 25):
		return advPTR
	}
	return advAuthGeneric
}

func adviseTLS(t *text) advice {
	if t.code == 0 || t.has("negotiation failed", "handshake", "x509", "certificate", "mta-sts", "does not offer starttls", "tls not available") {
		return advTLSFailed
	}
	return advTLSNeeded
}

func adviseLockout(t *text) advice {
	if t.has("from your address", "from your ip", "from this address", "from this ip") {
		return advLockoutIP
	}
	return advLockout
}

func adviseLogin(t *text) advice {
	switch {
	case t.has("disabled", "access to this user account"):
		return advLoginDisabled
	case t.code == 530 || t.has("required", "requires", "must authenticate", "not logged in", "not authenticated"):
		return advLoginRequired
	}
	return advLoginFailed
}

func adviseRate(t *text) advice {
	switch {
	case t.has("[tss04]", "unexpected volume"):
		return advYahooVolume
	case t.enhIs(7, 28) || t.has("unusual rate"):
		return advGmailRate
	case t.has("quota", "sending limit", "send limit", "daily limit", "hourly limit", "too many messages", "too many mails",
		"too many emails", "messages per hour", "messages per day"):
		return advSendQuota
	}
	return advRate
}

func adviseFull(t *text) advice {
	if t.permanent() {
		return advFullPermanent
	}
	return advFull
}

func adviseSpam(t *text) advice {
	if t.has("attachment", "file type") {
		return advAttachment
	}
	return advSpam
}

func adviseTemp(t *text) advice {
	switch {
	case t.has("busy", "too many connections", "overloaded"):
		return advBusy
	case t.code == 0 && t.eClass == 0:
		return advNetwork
	}
	return advTemp
}

// byEnhanced maps an enhanced status code (RFC 3463, RFC 5248 and the
// codes Microsoft and others added) when no text rule matched.
func byEnhanced(t *text) (Category, advice, bool) {
	if t.eClass == 0 {
		return "", advice{}, false
	}
	temp := t.eClass == 4
	switch s, d := t.eSubj, t.eDetail; s {
	case 1:
		switch d {
		case 1:
			return UnknownMailbox, advNoUser, true
		case 2, 10:
			return UnknownMailbox, advNoDomain, true
		case 3:
			return UnknownMailbox, advBadAddress, true
		case 6:
			return UnknownMailbox, advMoved, true
		case 7:
			return Sender, advSenderSyntax, true
		case 8:
			return Sender, advSender, true
		}
	case 2:
		switch d {
		case 1:
			return UnknownMailbox, advDisabled, true
		case 2:
			return MailboxFull, adviseFull(t), true
		case 3:
			return TooBig, advTooBig, true
		}
	case 3:
		switch d {
		case 4:
			return TooBig, advTooBig, true
		case 1, 2:
			return TempFailure, advTemp, true
		}
	case 4:
		switch {
		case d == 6:
			return Policy, advLoop, true
		case temp:
			return TempFailure, advNetwork, true
		case d == 1: // Microsoft's Directory-Based Edge Blocking uses 5.4.1
			return UnknownMailbox, advMS541, true
		case d == 4:
			return UnknownMailbox, advNoDomain, true
		}
	case 5:
		if d == 3 {
			return RateLimited, advTooManyRcpt, true
		}
		return Malformed, advProtocol, true
	case 6:
		return Malformed, advHeaders, true
	case 7:
		switch {
		case d == 1 && temp:
			return RateLimited, advGreylist, true
		case d == 0 && temp:
			return TempFailure, advTemp, true
		case d == 8 || d == 12 || d == 13:
			return Login, adviseLogin(t), true
		case d == 10 || d == 11 || d == 30:
			return TLSRequired, advTLSNeeded, true
		case d == 16:
			return TooBig, advTooBig, true
		case d == 17 || d == 18:
			return UnknownMailbox, advDisabled, true
		case d >= 20 && d <= 26 || d == 29:
			return Authentication, adviseAuth(t), true
		case d == 27:
			return Sender, advSender, true
		case d == 57:
			return Login, advLoginRequired, true
		case d == 350:
			return Spam, advSpam, true
		case d == 7:
			return Malformed, advHeaders, true
		case temp && d >= 500 && d <= 699:
			return RateLimited, advRate, true
		case !temp:
			return Policy, advPolicy, true
		}
	}
	return "", advice{}, false
}

// byCode maps the basic reply code, the last resort.
func byCode(t *text) (Category, advice) {
	switch c := t.code; {
	case c == 0:
		if t.eClass == 4 {
			return TempFailure, advTemp
		}
		if t.eClass == 5 {
			return Unknown, advUnknownPermanent
		}
		return Unknown, advUnknownNoCode
	case c == 421 || c == 450 || c == 451 || c == 452 || c == 454 || c == 455:
		return TempFailure, advTemp
	case c >= 400 && c < 500:
		return TempFailure, advTemp
	case c == 530 || c == 535 || c == 534:
		return Login, adviseLogin(t)
	case c == 523 || c == 538:
		return TLSRequired, advTLSNeeded
	case c >= 500 && c <= 504:
		return Malformed, advProtocol
	case c == 551:
		return UnknownMailbox, advMoved
	case c == 552:
		return TooBig, advTooBig
	case c == 553:
		return UnknownMailbox, advBadAddress
	case c == 556:
		return UnknownMailbox, advNoDomain
	case c == 554:
		return Policy, advPolicy
	}
	return Unknown, advUnknownPermanent
}
