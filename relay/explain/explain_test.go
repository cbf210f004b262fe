package explain

import (
	"strings"
	"testing"
)

type tcase struct {
	name      string
	reply     string
	cat       Category
	code      int
	enh       string
	permanent bool
}

// cases are real reply lines: the MailEnable catalogue, the hosting
// provider's 550-5.7.1 examples, Gmail, Microsoft, Yahoo, the usual block
// lists, Postfix and Exchange bounces, and Sluice's own replies.
var cases = []tcase{
	// MailEnable's catalogue.
	{"421 not available", "421 Service not available, closing transmission channel", TempFailure, 421, "", false},
	{"451 error in processing", "451 Requested action aborted: error in processing", TempFailure, 451, "", false},
	{"451 temporary server error", "451 Temporary server error. Please try again later.", TempFailure, 451, "", false},
	{"451 sending limit", "451 Requested action aborted: This mail account has sent too many messages in a short amount of time. Please try later.", RateLimited, 451, "", false},
	{"451 greylisting", "451 This server employs greylisting as a means of reducing spam. Please resend e-mail shortly", RateLimited, 451, "", false},
	{"451 reported spam source", "451 The IP Address you are sending from was reported as a source of spam. Please contact your e-mail administrator.", BlockList, 451, "", false},
	{"451 too busy", "451 ESMTP MailEnable Service temporarily refused connection at 10:22:07 from IP [203.0.113.7] because the server is too busy", TempFailure, 451, "", false},
	{"452 too many recipients", "452 Too many recipients", RateLimited, 452, "", false},
	{"Gmail direct from end-user IP", "550-5.7.1 [2001:db8::7] The IP you're using to send mail is not authorized to send email directly to our servers. Please use the SMTP relay at your service provider instead.", BlockList, 550, "5.7.1", true},
	{"Sluice Rspamd rated, overridden to reject", "550 5.7.1 the content scanner rated this message as probable spam (score 7.5, refused from 15.0; GTUBE); remove what triggers it", Spam, 550, "5.7.1", true},
	{"Sluice long line", "554 5.6.0 line 3 of the message is longer than 998 characters; configure the sending program to wrap lines", Malformed, 554, "5.6.0", true},
	{"Postfix line too long", "500 5.5.2 Error: line too long", Malformed, 500, "5.5.2", true},
	{"452 no remote domains", "452 You are not permitted to send to remote domains", Policy, 452, "", false},
	{"500 links to listed IP", "500 Message rejected because it contains links to an IP address that is blacklisted", BlockList, 500, "", true},
	{"500 syntax", "500 Syntax Error, command unrecognized", Malformed, 500, "", true},
	{"503 relay needs auth", "503 This mail server requires authentication when attempting to send to a non-local e-mail address. Please check your mail client settings or contact your administrator to verify that the domain or address is defined for this server.", Policy, 503, "", true},
	{"504 account disabled", "504 User account has been disabled by the mail administrator", Login, 504, "", true},
	{"550 mailbox unavailable", "550 Requested action not taken: mailbox unavailable or not local", UnknownMailbox, 550, "", true},
	{"550 sender domain not permitted", "550 Requested action not taken. The domain you are sending from is not permitted to access this server", Sender, 550, "", true},
	{"550 submission needs auth", "550 This mail server requires authentication (0) when attempting to send via this SMTP (submission) port", Login, 550, "", true},
	{"551 relaying needs auth", "551 User not local: authentication required for relaying", Policy, 551, "", true},
	{"551 sender not valid for login", "551 Sender address is not valid for your login. Check your email program settings", Sender, 551, "", true},
	{"552 size exceeds", "552 Message size exceeds fixed maximum message size", TooBig, 552, "", true},
	{"552 storage allocation", "552 Requested mail action aborted: exceeded storage allocation", MailboxFull, 552, "", true},
	{"554 DNSBL", "554 The IP address of the sender (203.0.113.7) was found in a DNS blacklist database and was therefore refused", BlockList, 554, "", true},
	{"554 SPF", "554 The IP address of the sender (203.0.113.7) does not match the SPF record for the sender domain", Authentication, 554, "", true},
	{"500 sender agreement", "500 Error during Sender Agreement Determination", Authentication, 500, "", true},

	// RFC 5321 wording.
	{"551 user not local", "551 User not local; please try <bob@example.net>", UnknownMailbox, 551, "", true},

	// The hosting provider's 550-5.7.1 examples.
	{"550-5.7.1 spam", "550-5.7.1 Our system has detected that this message is likely unsolicited mail (SPAM). To reduce the amount of spam, this message has been blocked. (12zGg44vPFz5Bcw7)", Spam, 550, "5.7.1", true},
	{"550-5.7.1 authentication", "550-5.7.1 This message does not have authentication information or fails to pass\n550-5.7.1 authentication checks. To best protect our users from spam, the\n550 5.7.1 message has been blocked.", Authentication, 550, "5.7.1", true},
	{"550-5.7.1 IPv6 PTR", "550-5.7.1 Our system has detected that this message does not meet IPv6 sending guidelines regarding PTR records and authentication.", Authentication, 550, "5.7.1", true},
	{"550 5.7.1 S3140", "550 5.7.1 Unfortunately, messages from [123.123.123.123] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3140). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.", BlockList, 550, "5.7.1", true},

	// Gmail.
	{"gmail 5.7.26 unauthenticated", "550-5.7.26 This mail is unauthenticated, which poses a security risk to the\n550-5.7.26 sender and Gmail users, and has been blocked. The sender must\n550-5.7.26 authenticate with at least one of SPF or DKIM. For this message,\n550-5.7.26 DKIM checks did not pass and SPF check for [example.com] did not\n550 5.7.26 pass with ip: [192.0.2.10].", Authentication, 550, "5.7.26", true},
	{"gmail 5.7.26 DMARC", "550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's\r\n550-5.7.26 DMARC policy. Please contact the administrator of example.com domain\r\n550 5.7.26 if this was a legitimate mail.", Authentication, 550, "5.7.26", true},
	{"gmail 4.7.28 rate", "421-4.7.28 [192.0.2.10      15] Our system has detected an unusual rate of\n421-4.7.28 unsolicited mail originating from your IP address. To protect our\n421-4.7.28 users from spam, mail sent from your IP address has been temporarily\n421 4.7.28 rate limited.", RateLimited, 421, "4.7.28", false},
	{"gmail 4.2.2 over quota", "452-4.2.2 The email account that you tried to reach is over quota. Please direct\n452 4.2.2 the recipient to https://support.google.com/mail/?p=OverQuotaTemp", MailboxFull, 452, "4.2.2", false},
	{"gmail 5.2.2 mailbox full", "552-5.2.2 The recipient's inbox is out of storage space. Please direct the recipient to\n552 5.2.2 https://support.google.com/mail/?p=OverQuotaPerm", MailboxFull, 552, "5.2.2", true},
	{"gmail 5.1.1 no such user", "550-5.1.1 The email account that you tried to reach does not exist. Please try\n550-5.1.1 double-checking the recipient's email address for typos or\n550-5.1.1 unnecessary spaces. For more information, go to\n550 5.1.1  https://support.google.com/mail/?p=NoSuchUser", UnknownMailbox, 550, "5.1.1", true},
	{"gmail 5.2.1 disabled", "550 5.2.1 The email account that you tried to reach is disabled.", UnknownMailbox, 550, "5.2.1", true},
	{"gmail 5.7.25 PTR", "550-5.7.25 The IP address sending this message does not have a PTR record setup, or\n550 5.7.25 the corresponding forward DNS entry does not point to the sending IP.", Authentication, 550, "5.7.25", true},
	{"gmail 5.2.3 size", "552-5.2.3 Your message exceeded Google's message size limits. Please visit\n552 5.2.3 https://support.google.com/mail/?p=MaxSizeError to view our size guidelines.", TooBig, 552, "5.2.3", true},
	{"gmail 5.4.5 sending quota", "550 5.4.5 Daily user sending quota exceeded.", RateLimited, 550, "5.4.5", true},
	{"gmail 4.7.0 reputation", "421-4.7.0 [192.0.2.10] Our system has detected that this message is suspicious due to the very low reputation of the sending domain.", BlockList, 421, "4.7.0", false},
	{"gmail 5.7.1 not RFC 5322", "550-5.7.1 [192.0.2.10] Our system has detected that this message is not RFC 5322\n550-5.7.1 compliant: 'From' header is missing. To reduce the amount of spam sent\n550 5.7.1 to Gmail, this message has been blocked.", Malformed, 550, "5.7.1", true},
	{"gmail 5.7.0 security issue", "552-5.7.0 This message was blocked because its content presents a potential\n552 5.7.0 security issue.", Spam, 552, "5.7.0", true},
	{"gmail 535 credentials", "535-5.7.8 Username and Password not accepted. Learn more at\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials", Login, 535, "5.7.8", true},
	{"gmail 530 auth required", "530-5.7.0 Authentication Required. Learn more at\n530 5.7.0  https://support.google.com/mail/?p=WantAuthError", Login, 530, "5.7.0", true},
	{"530 STARTTLS first", "530 5.7.0 Must issue a STARTTLS command first.", TLSRequired, 530, "5.7.0", true},

	// Microsoft.
	{"ms 5.7.606 banned IP", "550 5.7.606 Access denied, banned sending IP [192.0.2.10]. To request removal from this list please visit https://sender.office.com/ and follow the directions.", BlockList, 550, "5.7.606", true},
	{"ms 5.7.708", "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.", BlockList, 550, "5.7.708", true},
	{"ms 5.4.1 access denied", "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [BN8NAM11FT066.eop-nam11.prod.protection.outlook.com]", UnknownMailbox, 550, "5.4.1", true},
	{"ms S3150", "550 5.7.1 Unfortunately, messages from [192.0.2.10] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).", BlockList, 550, "5.7.1", true},
	{"ms 5.7.509 DMARC", "550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification and has a DMARC policy of reject.", Authentication, 550, "5.7.509", true},
	{"ms 5.1.10 not found", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", UnknownMailbox, 550, "5.1.10", true},
	{"ms 5.7.64 relay", "550 5.7.64 TenantAttribution; Relay Access Denied", Policy, 550, "5.7.64", true},
	{"ms 4.7.650 rate", "451 4.7.650 The mail server [192.0.2.10] has been temporarily rate limited due to IP reputation.", RateLimited, 451, "4.7.650", false},
	{"ms 5.7.57 anonymous", "530 5.7.57 Client not authenticated to send mail. Error: 535 5.7.3 Authentication unsuccessful", Login, 530, "5.7.57", true},
	{"exchange NDR", "Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'", UnknownMailbox, 550, "5.1.1", true},

	// Yahoo.
	{"yahoo TSS04", "421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://senders.yahooinc.com/error-codes", RateLimited, 421, "4.7.0", false},
	{"yahoo TSS09", "553 5.7.2 [TSS09] All messages from 192.0.2.10 will be permanently deferred; Retrying will NOT succeed. See https://senders.yahooinc.com/error-codes", BlockList, 553, "5.7.2", true},
	{"yahoo BL21", "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.10, because the ip is in Spamhaus's list; see https://senders.yahooinc.com/error-codes", BlockList, 553, "5.7.1", true},
	{"yahoo policy", "554 5.7.9 Message not accepted for policy reasons.  See https://senders.yahooinc.com/error-codes", Policy, 554, "5.7.9", true},
	{"yahoo unauthenticated", "550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all senders to authenticate with either SPF or DKIM.", Authentication, 550, "5.7.9", true},

	// Block lists.
	{"spamhaus zen", "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.10", BlockList, 554, "5.7.1", true},
	{"spamhaus PBL", "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using pbl.spamhaus.org", BlockList, 554, "5.7.1", true},
	{"spamhaus XBL", "550 5.7.1 Rejected: 192.0.2.10 listed in XBL, see https://check.spamhaus.org/", BlockList, 550, "5.7.1", true},
	{"spamhaus SBL", "554 5.7.1 Rejected because 192.0.2.10 is in the Spamhaus SBL", BlockList, 554, "5.7.1", true},
	{"barracuda", "550 5.7.1 Message rejected because 192.0.2.10 is listed on b.barracudacentral.org", BlockList, 550, "5.7.1", true},
	{"spamcop", "554 5.7.1 Blocked - see https://www.spamcop.net/bl.shtml?192.0.2.10", BlockList, 554, "5.7.1", true},
	{"uceprotect", "550 5.7.1 Your IP 192.0.2.10 is listed at dnsbl-1.uceprotect.net, see http://www.uceprotect.net/rblcheck.php", BlockList, 550, "5.7.1", true},

	// Greylisting.
	{"greylisted", "451 4.7.1 Greylisted, please try again in 300 seconds", RateLimited, 451, "4.7.1", false},
	{"postgrey", "450 4.2.0 <bob@example.org>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.org.html", RateLimited, 450, "4.2.0", false},
	{"try again later 4.7.1", "451 4.7.1 Please try again later", RateLimited, 451, "4.7.1", false},

	// Postfix and friends.
	{"relay access denied", "554 5.7.1 <bob@example.org>: Relay access denied", Policy, 554, "5.7.1", true},
	{"relaying denied", "550 5.7.1 Relaying denied", Policy, 550, "5.7.1", true},
	{"postfix too big", "552 5.3.4 Error: message file too big", TooBig, 552, "5.3.4", true},
	{"postfix too many recipients", "452 4.5.3 Error: too many recipients", RateLimited, 452, "4.5.3", false},
	{"postfix user unknown behind prefix", "host mx.example.org[203.0.113.25] said: 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)", UnknownMailbox, 550, "5.1.1", true},
	{"mailbox full", "552 5.2.2 <bob@example.org>: Mailbox full", MailboxFull, 552, "5.2.2", true},
	{"sender not owned", "553 5.7.1 <x@example.com>: Sender address rejected: not owned by user bob@example.com", Sender, 553, "5.7.1", true},
	{"sender domain not found", "553 5.1.8 <bob@invalid.example>: Sender address rejected: Domain not found", Sender, 553, "5.1.8", true},
	{"mail loop", "554 5.4.6 Hop count exceeded - possible mail loop", Policy, 554, "5.4.6", true},
	{"amavis spam", "554 5.7.0 Reject, id=12345-06 - spam", Spam, 554, "5.7.0", true},
	{"content filter spam", "Diagnostic-Code: smtp; 550 5.7.1 Message rejected as spam by Content Filtering.", Spam, 550, "5.7.1", true},
	{"remote server replied prefix", "Remote server replied: 554 5.7.1 <bob@example.org>: Relay access denied", Policy, 554, "5.7.1", true},
	{"timeout", "421 4.4.2 mx.example.org Error: timeout exceeded", TempFailure, 421, "4.4.2", false},
	{"enhanced only", "5.1.1 user unknown", UnknownMailbox, 0, "5.1.1", true},

	// Sluice's own replies.
	{"own 530 auth required", "530 5.7.0 authentication required: log in with your mailbox address and password (AUTH PLAIN or LOGIN over TLS) before sending", Login, 530, "5.7.0", true},
	{"own 535 bad credentials", "535 5.7.8 authentication failed: the username or password is wrong; use your full mailbox address as the username and check the password", Login, 535, "5.7.8", true},
	{"own 535 disabled", "535 5.7.8 login bob@example.com is disabled; ask your mail administrator to enable it", Login, 535, "5.7.8", true},
	{"own 553 sender not owned", "553 5.7.1 sender x@example.org is not an address of login bob@example.com; send from your own address or ask for it to be added to your login", Sender, 553, "5.7.1", true},
	{"own 451 quota", "451 4.7.1 mailbox bob@example.com has sent its 200 messages this hour; try again after 14:05 UTC", RateLimited, 451, "4.7.1", false},
	{"own 451 quota login", "451 4.7.1 login bob@example.com has sent its 200 messages (recipients) this hour; try again after 14:05 UTC", RateLimited, 451, "4.7.1", false},
	{"own 452 recipients", "452 4.5.3 too many recipients (limit 100); send the rest in another message", RateLimited, 452, "4.5.3", false},
	{"own 552 too big", "552 5.3.4 message exceeds 25 MB; send large files as a download link instead of an attachment", TooBig, 552, "5.3.4", true},
	{"own 554 bare LF", "554 5.6.0 the message contains a bare CR or LF line ending (possible SMTP smuggling); send lines ending in CRLF", Malformed, 554, "5.6.0", true},
	{"own 538 encryption", "538 5.7.11 encryption required: start TLS (port 587 with STARTTLS, or port 465) before logging in", TLSRequired, 538, "5.7.11", true},
	{"own 421 busy", "421 4.7.0 too busy, try again later", TempFailure, 421, "4.7.0", false},
	{"own 421 lockout", "421 4.7.0 too many failed logins for bob@example.com; try again after 14:05 UTC or reset your password", Login, 421, "4.7.0", false},
	{"own 451 temporary", "451 4.3.0 temporary failure, try again in a few minutes", TempFailure, 451, "4.3.0", false},
	{"own 454 temporary auth", "454 4.7.0 temporary authentication failure, try again in a few minutes", TempFailure, 454, "4.7.0", false},
	{"own 550 web-form loop", "550 5.7.1 message from info@example.com to info@example.com looks like a web-form loop; send form mail from a separate address such as form@example.com with the visitor in Reply-To", Policy, 550, "5.7.1", true},
	{"own 554 listed link", "554 5.7.1 the message contains a link to the IP address 192.0.2.66, which the block list zen.spamhaus.org lists; remove the link (a compromised site, or a shortener that points there)", BlockList, 554, "5.7.1", true},
	{"own 550 scanner", "550 5.7.1 the content scanner judged this message as spam (score 16.2 of 15.0; R_SPF_FAIL, BAYES_SPAM); remove what triggers it or ask the administrator to check the message", Spam, 550, "5.7.1", true},
	{"own 552 attachment", "552 5.7.0 attachment invoice.exe has a blocked file type (.exe) that receivers refuse and malware uses; share it as a download link or in a password-protected archive", Spam, 552, "5.7.0", true},
	{"own 550 no From", "550 5.7.1 the message has no From header; the plugin or script that builds it must set From to your address", Malformed, 550, "5.7.1", true},
	{"own 504 mechanism", "504 5.5.4 unsupported authentication mechanism; use PLAIN or LOGIN", Login, 504, "5.5.4", true},
	{"own 553 bad sender syntax", "553 5.1.7 the MAIL FROM address is not a valid address; use the form name@example.com", Sender, 553, "5.1.7", true},
	{"own 550 suppressed", "550 5.1.1 not sent: bob@example.org bounced as unknown on 2025-01-02 (550 5.1.1 user unknown); Sluice suppresses it until 2025-02-01", UnknownMailbox, 550, "5.1.1", true},
	{"own no mail server", "550 5.1.2 the domain example.con has no mail server (no MX or address record)", UnknownMailbox, 550, "5.1.2", true},
	{"own null MX", "556 5.1.10 the domain example.net does not accept mail (null MX, RFC 7505)", UnknownMailbox, 556, "5.1.10", true},
	{"own connection refused", "cannot connect to mx.example.org (203.0.113.25:25): dial tcp 203.0.113.25:25: connect: connection refused", TempFailure, 0, "", false},
	{"own connection closed", "connection problem: the server closed the connection", TempFailure, 0, "", false},
	{"own send cut off", "connection lost while sending the message: the server closed the connection", TempFailure, 0, "", false},
	{"own TLS failed", "TLS negotiation failed with mx.example.org: tls: failed to verify certificate: x509: certificate signed by unknown authority", TLSRequired, 0, "", false},
	{"own queued", "250 2.0.0 Ok: queued as 4Bf3mk1Xy2z", Accepted, 250, "2.0.0", false},
	// Sluice's session replies before TLS and on the wire (submit/pretls.go,
	// submit/replies.go), word for word.
	{"own 530 STARTTLS first", "530 5.7.0 encryption required: send STARTTLS first (or use SSL/TLS on port 465), then log in and send; turn on STARTTLS in your mail client's outgoing server settings", TLSRequired, 530, "5.7.0", true},
	{"own 421 too many bad commands", "421 4.7.0 too many bad commands; check your mail client's SMTP settings (server, port, encryption), then connect again", Malformed, 421, "4.7.0", false},
	{"own 500 unrecognized command", "500 5.5.2 unrecognized command; check that your client is set up for SMTP submission (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA)", Malformed, 500, "5.5.2", true},
	{"own 554 smuggled dot", "554 5.6.0 the message has a line \".\" followed by a bare CR, the end-of-data trick of SMTP smuggling; send lines ending in CRLF", Malformed, 554, "5.6.0", true},
	{"own 421 lockout IP", "421 4.7.0 too many failed logins from your address 127.0.0.1; try again after 14:05 UTC and correct the password saved in the mail clients and devices there", Login, 421, "4.7.0", false},
	{"own 421 idle timeout", "421 4.4.2 no command for 5m0s; closing the connection, connect again to send", TempFailure, 421, "4.4.2", false},
	{"own 421 data timeout", "421 4.4.2 timed out waiting for the message data; check your connection and send again", TempFailure, 421, "4.4.2", false},

	// Fallbacks.
	{"bare 550", "550", Unknown, 550, "", true},
	{"bare 4xx", "450 4.0.0", TempFailure, 450, "4.0.0", false},
	{"no code", "hello world", Unknown, 0, "", false},
	{"empty", "", Unknown, 0, "", false},
}

func TestExplain(t *testing.T) {
	if len(cases) < 45 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := Explain(c.reply)
			if e.Category != c.cat || e.Code != c.code || e.Enhanced != c.enh || e.Permanent != c.permanent {
				t.Errorf("Explain(%q)\n got  %s %d %q permanent=%v\n want %s %d %q permanent=%v",
					c.reply, e.Category, e.Code, e.Enhanced, e.Permanent, c.cat, c.code, c.enh, c.permanent)
			}
			if e.Meaning == "" || e.Action == "" {
				t.Errorf("Explain(%q): empty meaning or action: %+v", c.reply, e)
			}
		})
	}
}

// TestExplainDetails checks the parts of the advice that name a list, a
// fix or a command.
func TestExplainDetails(t *testing.T) {
	for _, c := range []struct {
		reply, in, want string
	}{
		{"554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using pbl.spamhaus.org", "meaning", "Spamhaus PBL"},
		{"554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org", "action", "check.spamhaus.org"},
		{"550 5.7.1 Message rejected because 192.0.2.10 is listed on b.barracudacentral.org", "meaning", "Barracuda"},
		{"550 5.7.606 Access denied, banned sending IP [192.0.2.10].", "action", "sender.office.com"},
		{"550 5.7.1 ... part of their network is on our block list (S3140).", "meaning", "Outlook.com"},
		{"500 Message rejected because it contains links to an IP address that is blacklisted", "meaning", "link"},
		{"554 The IP address of the sender (203.0.113.7) does not match the SPF record for the sender domain", "action", "sluice dns check DOMAIN"},
		{"550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy.", "meaning", "DMARC"},
		{"550 5.1.1 user unknown", "action", "do not retry"},
		{"553 5.7.1 sender x@example.org is not an address of login bob@example.com", "action", "--grant"},
		{"gave up after 5 days of retries; last reply: 451 4.7.1 Greylisted, please try again in 300 seconds", "meaning", "gave up"},
		{"421-4.7.26 This mail has been rate limited because it is unauthenticated.", "action", "temporary"},
	} {
		t.Run(c.reply, func(t *testing.T) {
			e := Explain(c.reply)
			got := e.Meaning
			if c.in == "action" {
				got = e.Action
			}
			if !strings.Contains(got, c.want) {
				t.Errorf("Explain(%q).%s = %q, want it to contain %q", c.reply, c.in, got, c.want)
			}
		})
	}
}

func TestExplainExpired(t *testing.T) {
	e := Explain("gave up after 5 days of retries; last reply: 451 4.7.1 Greylisted, please try again in 300 seconds")
	if e.Code != 451 || e.Enhanced != "4.7.1" || e.Category != RateLimited {
		t.Errorf("got %+v", e)
	}
	if !strings.Contains(e.Action, "no longer retries") {
		t.Errorf("action %q does not say retries stopped", e.Action)
	}
}

func TestString(t *testing.T) {
	s := Explain("550 5.1.1 user unknown").String()
	for _, want := range []string{"kind:    mailbox-unknown (550 5.1.1, permanent)", "meaning: ", "to do:   "} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %q, missing %q", s, want)
		}
	}
	if s := Explain("hello").String(); !strings.Contains(s, "unknown (no reply code)") {
		t.Errorf("String() = %q", s)
	}
}

// TestRelayExplainer is the shape relay.Explainer expects.
func TestRelayExplainer(t *testing.T) {
	var f func(string) (string, string, string) = func(r string) (string, string, string) {
		e := Explain(r)
		return string(e.Category), e.Meaning, e.Action
	}
	if c, m, a := f("552 5.2.2 Mailbox full"); c != "mailbox-full" || m == "" || a == "" {
		t.Errorf("got %q %q %q", c, m, a)
	}
}

// TestExplainAdvice: the advice fits the cause, not only the category.
func TestExplainAdvice(t *testing.T) {
	for _, tc := range []struct{ reply, want, notWant string }{
		{"554 5.6.0 line 3 of the message is longer than 998 characters; configure the sending program to wrap lines", "wrap long lines", "exactly one From"},
		{"550-5.7.1 The IP you're using to send mail is not authorized to send email directly to our servers.", "whoever runs the relay", ""},
		{"451 4.7.1 login info@example.test has sent its 100 messages (recipients) this hour; try again after 14:05 UTC", "after the time given", ""},
		// Sluice's session replies: the advice names the cause.
		{"530 5.7.0 encryption required: send STARTTLS first (or use SSL/TLS on port 465), then log in and send; turn on STARTTLS in your mail client's outgoing server settings",
			"choose STARTTLS/TLS on port 587 or SSL/TLS on port 465", "login was refused"},
		{"538 5.7.11 encryption required: start TLS (port 587 with STARTTLS, or port 465) before logging in", "over an encrypted connection", "login was refused"},
		{"421 4.7.0 too many bad commands; check your mail client's SMTP settings (server, port, encryption), then connect again",
			"closed the connection after several commands", "retried automatically"},
		{"421 4.7.0 too many bad commands; check your mail client's SMTP settings (server, port, encryption), then connect again",
			"port 587 with STARTTLS or port 465 with SSL/TLS", "temporary problem"},
		{"500 5.5.2 unrecognized command; check that your client is set up for SMTP submission (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA)",
			"wrong port or encryption", "connection was not encrypted"},
		{"554 5.6.0 the message has a line \".\" followed by a bare CR, the end-of-data trick of SMTP smuggling; send lines ending in CRLF", "every line ends in CRLF", ""},
		{"554 5.6.0 the message contains a bare CR or LF line ending (possible SMTP smuggling); send lines ending in CRLF", "SMTP smuggling", ""},
		{"421 4.7.0 too many failed logins from your address 127.0.0.1; try again after 14:05 UTC and correct the password saved in the mail clients and devices there",
			"every login from that address", "for this account"},
		{"421 4.7.0 too many failed logins for bob@example.com; try again after 14:05 UTC or reset your password", "Wait until the time in the reply", "every login from"},
		{"421 4.4.2 no command for 5m0s; closing the connection, connect again to send", "waited too long between commands", "could not be reached"},
		{"421 4.4.2 timed out waiting for the message data; check your connection and send again", "stopped sending the message part-way", "temporary problem"},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			e := Explain(tc.reply)
			text := e.Meaning + " " + e.Action
			if !strings.Contains(text, tc.want) || tc.notWant != "" && strings.Contains(text, tc.notWant) {
				t.Errorf("%q:\n%s\nwant it to say %q (and not %q)", tc.reply, text, tc.want, tc.notWant)
			}
		})
	}
}
