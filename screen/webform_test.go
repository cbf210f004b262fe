package screen

import (
	"context"
	"strings"
	"testing"
)

// Messages as the form plugins send them through wp_mail() and PHPMailer,
// and as people send notes to themselves from mail clients.
const (
	cf7NoReplyTo = "Date: Mon, 13 Oct 2025 09:12:44 +0000\nTo: info@example.test\nFrom: Example Bakery <info@example.test>\nSubject: Example Bakery \"Opening hours\"\nMessage-ID: <Yq1x2@example.test>\nX-Mailer: PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n" +
		"From: Zoe Visitor <zoe@example.test>\nSubject: Opening hours\n\nMessage Body:\nWhen do you open on Sundays?\n\n-- \nThis e-mail was sent from a contact form on Example Bakery (https://example.test)\n"
	wpformsHiddenMailer = "Date: Mon, 13 Oct 2025 09:14:02 +0000\nTo: info@example.test\nFrom: Example Bakery <info@example.test>\nSubject: New Entry: Contact Form\nMessage-ID: <Zr2y3@example.test>\nMIME-Version: 1.0\nContent-Type: text/html; charset=UTF-8\nContent-Transfer-Encoding: quoted-printable\n\n" +
		"<!doctype html><html><body><table class=3D\"body\">\n<tr><td><strong>Name</strong><br>Zoe Visitor</td></tr>\n<tr><td><strong>Email</strong><br>zoe@example.test</td></tr>\n<tr><td><strong>Comment or Message</strong><br>When do you open?</td></tr>\n</table></body></html>\n"
	thunderbirdNote = "Message-ID: <4b1e0c2a-1f7e-4c1d-9a51-2f0d6c3b7e10@example.test>\nDate: Mon, 13 Oct 2025 18:02:11 +0200\nMIME-Version: 1.0\nUser-Agent: Mozilla Thunderbird\nContent-Language: en-US\nTo: Info Example <info@example.test>\nFrom: Info Example <info@example.test>\nSubject: Reminder: call the plumber\nContent-Type: text/plain; charset=UTF-8; format=flowed\nContent-Transfer-Encoding: 7bit\n\n" +
		"Call Mr. Jansen about the leaking tap before Friday.\nNumber is in the folder on my desk.\n"
	outlookNote = "From: Info Example <info@example.test>\nTo: Info Example <info@example.test>\nSubject: files for home\nDate: Mon, 13 Oct 2025 16:40:00 +0000\nMessage-ID: <000001dc3c1f$8a2b1c30$9e815490$@example.test>\nMIME-Version: 1.0\nX-Mailer: Microsoft Outlook 16.0\nContent-Language: nl\nContent-Type: text/plain; charset=\"us-ascii\"\nContent-Transfer-Encoding: 7bit\n\n" +
		"Thuis verder werken aan de offerte.\n"
	appleMailNote = "From: Info Example <info@example.test>\nContent-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\nMime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))\nSubject: shopping list\nMessage-Id: <C3F1B2A4-0F5D-4B9E-A1C2-7E8D9F0A1B2C@example.test>\nDate: Mon, 13 Oct 2025 19:20:00 +0200\nTo: info@example.test\nX-Mailer: Apple Mail (2.3774.600.62)\n\n" +
		"flour, yeast, 2 kg butter\n"
)

// TestWebFormSelfNote: a message from an address to itself alone is a
// web-form loop when it looks like one (a visitor in Reply-To, a script
// mailer, no mail client named, a form plugin's body); a note a person
// sends to themselves from a mail client passes.
func TestWebFormSelfNote(t *testing.T) {
	cases := []struct {
		name    string
		raw     string
		refused bool
	}{
		{"Contact Form 7 through PHPMailer, no Reply-To", cf7NoReplyTo, true},
		{"Contact Form 7 with the visitor in Reply-To", strings.Replace(cf7NoReplyTo, "Subject: Example", "Reply-To: Zoe Visitor <zoe@visitor.test>\nSubject: Example", 1), true},
		{"WPForms HTML, X-Mailer removed", wpformsHiddenMailer, true},
		{"CF7 body with the X-Mailer of a mail client", strings.Replace(cf7NoReplyTo, "X-Mailer: PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)", "User-Agent: Mozilla Thunderbird", 1), true},
		{"script naming no mailer", "From: info@example.test\nTo: info@example.test\nSubject: hello\n\nhello\n", true},
		{"WordPress X-Mailer", "From: info@example.test\nTo: info@example.test\nX-Mailer: WordPress\nSubject: Site notice\n\nhello\n", true},
		{"Thunderbird note to self", thunderbirdNote, false},
		{"Outlook note to self", outlookNote, false},
		{"Apple Mail note to self", appleMailNote, false},
		{"Thunderbird note with an outside Reply-To", strings.Replace(thunderbirdNote, "Subject: Reminder", "Reply-To: someone@else.test\nSubject: Reminder", 1), true},
	}
	w := &WebForm{Mode: "reject", Log: quiet}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := w.Check(context.Background(), msg("info@example.test", []string{"info@example.test"}, c.raw))
			if !c.refused {
				if v != nil {
					t.Fatalf("refused: %v", v)
				}
				return
			}
			if v == nil || v.Code != 550 || v.Enhanced != [3]int{5, 7, 1} || !strings.Contains(v.Message, "form@example.test") {
				t.Fatalf("got %+v, want 550 5.7.1 with the form@ advice", v)
			}
		})
	}
}
