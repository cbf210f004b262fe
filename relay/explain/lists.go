package explain

// blockList is a list (or a receiver's own block) recognisable in a reply.
type blockList struct {
	name   string
	match  func(t *text) bool
	domain bool   // lists domains (found in links or the sender), not sending IPs
	rating bool   // a reputation score rather than a list of addresses
	hint   string // how the listing goes away
}

const defaultHint = "They can look the IP address up on the list's website, fix the cause (usually a hacked login or website that sent spam) and then ask for removal."

// lists are checked in order; the first match names the list.
var lists = []blockList{
	{name: "Microsoft 365's list of banned sending IPs", match: func(t *text) bool {
		return t.has("banned sending ip", "sender.office.com") || t.eClass == 5 && t.eSubj == 7 && t.eDetail >= 606 && t.eDetail <= 649
	}, hint: "They can ask for delisting at sender.office.com; the IP address and an e-mail address for the confirmation are all it needs."},
	{name: "Microsoft 365's IP reputation filter", rating: true, match: func(t *text) bool {
		return t.has("traffic not accepted from this ip") || t.eClass == 5 && t.eSubj == 7 && t.eDetail == 708
	}, hint: "Microsoft 365 refuses traffic from this address because of its low reputation (common for new or cheap hosting ranges); there is no delisting form for it, so mail has to go out through a relay or IP with a good reputation."},
	{name: "the Outlook.com block list", match: func(t *text) bool {
		return t.word("s3140", "s3150") || t.has("hotmail", "outlook.com") && t.has("block list")
	}, hint: "S3140 and S3150 usually mean the hosting provider's whole range is blocked; they can ask for mitigation through Microsoft's Outlook.com sender support form (olcsupport.office.com) and tell the provider."},
	{name: "Yahoo's own block list", match: func(t *text) bool { return t.has("[tss09]") },
		hint: "Yahoo has blocked all mail from this address and says retrying will not help; the cause has to be stopped first, then Yahoo's sender support (senders.yahooinc.com) can be asked for a review."},
	{name: "Spamhaus PBL", match: func(t *text) bool { return t.word("pbl") },
		hint: "The PBL lists address ranges that should not send mail straight to receivers (home and dynamic connections); mail from there must go through a real mail server, and if the listed address is the relay's own, its administrator can remove it at check.spamhaus.org."},
	{name: "Spamhaus XBL", match: func(t *text) bool { return t.word("xbl", "cbl") || t.has("abuseat") },
		hint: "The XBL lists addresses that showed signs of malware or a hijacked device; the cause must be found and cleaned before asking for removal at check.spamhaus.org."},
	{name: "Spamhaus DBL", domain: true, match: func(t *text) bool { return t.word("dbl") },
		hint: "The DBL lists domains seen in spam; check the domain at check.spamhaus.org."},
	{name: "Spamhaus SBL", match: func(t *text) bool { return t.word("sbl") },
		hint: "The SBL lists addresses Spamhaus judged to be spam sources; only the network's operator (the hosting provider) can resolve it with Spamhaus."},
	{name: "Spamhaus", match: func(t *text) bool { return t.has("spamhaus") },
		hint: "They can look the address up at check.spamhaus.org, which says which Spamhaus list has it, why, and how to get it removed."},
	{name: "Barracuda", match: func(t *text) bool { return t.has("barracuda") },
		hint: "They can check the address at barracudacentral.org and file the removal request there; requests are usually handled within a day or two."},
	{name: "SpamCop", match: func(t *text) bool { return t.has("spamcop") },
		hint: "SpamCop listings come from spam reports and expire on their own about a day after the reports stop; spamcop.net shows why the address is listed."},
	{name: "UCEPROTECT", match: func(t *text) bool { return t.has("uceprotect") },
		hint: "UCEPROTECT level 1 listings expire on their own about a week after the last spam; levels 2 and 3 cover the provider's whole network, which only the provider can address."},
	{name: "SORBS", match: func(t *text) bool { return t.has("sorbs") },
		hint: "SORBS stopped operating in 2024, so a server still refusing mail because of it uses an outdated list; tell the recipient's administrator."},
	{name: "Proofpoint", rating: true, match: func(t *text) bool { return t.has("proofpoint") },
		hint: "Proofpoint keeps its own reputation list; they can check the address and ask for a review at ipcheck.proofpoint.com."},
	{name: "Cloudmark", rating: true, match: func(t *text) bool { return t.has("cloudmark") },
		hint: "Cloudmark rates sending addresses by reputation; they can check the address and ask for a reset at csi.cloudmark.com."},
	{name: "Trend Micro", rating: true, match: func(t *text) bool { return t.has("trendmicro", "trend micro") },
		hint: "Trend Micro's email reputation service lists the address; they can check it and ask for removal at ers.trendmicro.com."},
	{name: "Abusix", match: func(t *text) bool { return t.has("abusix") },
		hint: "They can check the address and ask for removal at lookup.abusix.com."},
	{name: "SURBL", domain: true, match: func(t *text) bool { return t.has("surbl") }},
	{name: "URIBL", domain: true, match: func(t *text) bool { return t.has("uribl") }},
	{name: "Mailspike", match: func(t *text) bool { return t.has("mailspike") }},
	{name: "SpamRATS", match: func(t *text) bool { return t.has("spamrats") }},
	{name: "PSBL", match: func(t *text) bool { return t.word("psbl") }},
	{name: "Backscatterer", match: func(t *text) bool { return t.has("backscatterer") }},
	{name: "Invaluement", match: func(t *text) bool { return t.has("invaluement") }},
}

// findList names the list a reply mentions, or nil.
func findList(t *text) *blockList {
	for i := range lists {
		if lists[i].match(t) {
			return &lists[i]
		}
	}
	return nil
}

// adviseBlockList builds the advice for a listing, naming the list when the
// reply does.
func adviseBlockList(t *text) advice {
	l := findList(t)
	link := t.has("link", "url", "uri ", "contains a domain", "contains an ip") || l != nil && l.domain
	named := ""
	if l != nil {
		named = " (" + l.name + ")"
	}
	if link {
		return advice{
			"The message contains a link (or names a domain) that is on a block list" + named + ", so the receiver treats the message as spam.",
			"Remove or replace that link (often a hacked site or a link shortener that points there) and send again; if the site is yours, clean it up and ask the list for removal."}
	}
	if l == nil && t.has("reputation") {
		return advice{
			"The receiver refused the mail because the sending IP address or domain has a poor reputation with it (spam complaints, sudden volume, or an address without history).",
			"Tell whoever runs the relay: they should find and stop any spam or unwanted bulk mail going out, watch the address in the receivers' sender tools (Google Postmaster Tools, Microsoft SNDS) and ask for a review once it is clean."}
	}
	what := "the sending server's IP address is on a block list" + named
	if l != nil && l.rating {
		what = "the sending server's IP address has a poor reputation with it" + named
	}
	hint := defaultHint
	if l != nil && l.hint != "" {
		hint = l.hint
	}
	return advice{
		"The receiver refused the mail because " + what + ".",
		"This is about the relay's address, not the wording of your message: tell whoever runs the relay. " + hint + " Sending again before the listing is gone fails the same way."}
}
