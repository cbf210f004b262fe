<?php
// Sends one contact-form notification the way WordPress form plugins do:
// wp_mail() hands PHPMailer a From address, the site admin as recipient and
// the visitor in Reply-To. FORM_PLUGIN picks the plugin's message shape:
//   cf7      Contact Form 7: plain text, subject '[site] "subject"', the
//            mail template of its default form
//   wpforms  WPForms: HTML notification ("New Entry: Contact Form") with
//            the fields in a table
// Prints the outcome as key=value lines for the Go test (screen_test.go).
// Parameters come from the environment: SMTP_HOST, SMTP_PORT, SMTP_USER,
// SMTP_PASS, FORM_PLUGIN, FORM_FROM, FORM_FROM_NAME, FORM_TO, SITE_NAME,
// SITE_URL, VISITOR_NAME, VISITOR_EMAIL, VISITOR_SUBJECT, VISITOR_MESSAGE,
// PHPMAILER_DIR.
use PHPMailer\PHPMailer\PHPMailer;

$dir = getenv('PHPMAILER_DIR') ?: '/usr/share/php/libphp-phpmailer';
require $dir . '/src/Exception.php';
require $dir . '/src/PHPMailer.php';
require $dir . '/src/SMTP.php';

$site = getenv('SITE_NAME');
$siteURL = getenv('SITE_URL');
$name = getenv('VISITOR_NAME');
$email = getenv('VISITOR_EMAIL');
$subject = getenv('VISITOR_SUBJECT');
$message = getenv('VISITOR_MESSAGE');

// What wp_mail() does with a plugin's mail: PHPMailer over SMTP (as the
// usual SMTP plugins configure it), UTF-8.
$mail = new PHPMailer(false);
$mail->isSMTP();
$mail->Host = getenv('SMTP_HOST');
$mail->Port = (int)getenv('SMTP_PORT');
$mail->SMTPSecure = PHPMailer::ENCRYPTION_STARTTLS;
$mail->SMTPAutoTLS = false;
$mail->SMTPAuth = true;
$mail->Username = getenv('SMTP_USER');
$mail->Password = getenv('SMTP_PASS');
$mail->Timeout = 20;
$mail->SMTPOptions = ['ssl' => [
    'verify_peer' => false,
    'verify_peer_name' => false,
    'allow_self_signed' => true,
]];
$mail->CharSet = PHPMailer::CHARSET_UTF8;
$mail->XMailer = 'WordPress';
$replies = [];
$mail->SMTPDebug = 2;
$mail->Debugoutput = function ($str, $level) use (&$replies) {
    if (strpos($str, 'SERVER -> CLIENT: ') === 0) {
        $replies[] = trim(substr($str, strlen('SERVER -> CLIENT: ')));
    }
};

$mail->setFrom(getenv('FORM_FROM'), getenv('FORM_FROM_NAME'), false);
$mail->addAddress(getenv('FORM_TO'));
$mail->addReplyTo($email, $name);

switch (getenv('FORM_PLUGIN')) {
case 'cf7':
    $mail->Subject = $site . ' "' . $subject . '"';
    $mail->ContentType = PHPMailer::CONTENT_TYPE_PLAINTEXT;
    $mail->Body = "From: $name <$email>\n"
        . "Subject: $subject\n\n"
        . "Message Body:\n$message\n\n"
        . "-- \n"
        . "This e-mail was sent from a contact form on $site ($siteURL)\n";
    break;
case 'wpforms':
    $mail->Subject = 'New Entry: Contact Form';
    $mail->isHTML(true);
    $rows = '';
    foreach (['Name' => $name, 'Email' => $email, 'Comment or Message' => $message] as $k => $v) {
        $rows .= '<tr><td style="padding:10px 0;border-top:1px solid #dddddd"><strong>'
            . htmlspecialchars($k) . '</strong><br>' . nl2br(htmlspecialchars($v)) . "</td></tr>\n";
    }
    $mail->Body = '<!doctype html><html><head><meta charset="UTF-8"><title>' . htmlspecialchars($site) . "</title></head>\n"
        . '<body style="background:#e9eaec"><table class="body" border="0" cellpadding="0" cellspacing="0" width="100%">' . "\n"
        . $rows
        . '<tr><td>Sent from <a href="' . htmlspecialchars($siteURL) . '">' . htmlspecialchars($site) . "</a></td></tr>\n"
        . "</table></body></html>\n";
    break;
default:
    fwrite(STDERR, "FORM_PLUGIN must be cf7 or wpforms\n");
    exit(2);
}

$ok = $mail->send();
echo 'result=', $ok ? 'ok' : 'fail', "\n";
$dataReply = '';
foreach ($replies as $r) {
    if (strpos($r, 'queued as') !== false) {
        $dataReply = $r;
    }
}
echo 'data_reply=', $dataReply, "\n";
echo 'error=', str_replace(["\r", "\n"], ' ', $mail->ErrorInfo), "\n";
exit($ok ? 0 : 1);
