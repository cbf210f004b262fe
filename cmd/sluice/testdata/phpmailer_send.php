<?php
// Sends one message through PHPMailer and prints the outcome as
// key=value lines for the Go test. Parameters come from the environment:
// SMTP_HOST, SMTP_PORT, SMTP_SECURE (tls|ssl), SMTP_USER, SMTP_PASS,
// MAIL_FROM, MAIL_TO, MAIL_SUBJECT, MAIL_BODY, PHPMAILER_DIR.
use PHPMailer\PHPMailer\PHPMailer;
use PHPMailer\PHPMailer\Exception;

$dir = getenv('PHPMAILER_DIR') ?: '/usr/share/php/libphp-phpmailer';
require $dir . '/src/Exception.php';
require $dir . '/src/PHPMailer.php';
require $dir . '/src/SMTP.php';

$mail = new PHPMailer(false);
$mail->isSMTP();
$mail->Host = getenv('SMTP_HOST');
$mail->Port = (int)getenv('SMTP_PORT');
$mail->SMTPSecure = getenv('SMTP_SECURE') === 'ssl' ? PHPMailer::ENCRYPTION_SMTPS : PHPMailer::ENCRYPTION_STARTTLS;
$mail->SMTPAutoTLS = false;
$mail->SMTPAuth = true;
$mail->Username = getenv('SMTP_USER');
$mail->Password = getenv('SMTP_PASS');
// Record every server reply; the one to DATA carries the queue id.
$replies = [];
$mail->SMTPDebug = 2; // SMTP::DEBUG_SERVER: client commands and server replies
$mail->Debugoutput = function ($str, $level) use (&$replies) {
    if (strpos($str, 'SERVER -> CLIENT: ') === 0) {
        $replies[] = trim(substr($str, strlen('SERVER -> CLIENT: ')));
    }
};
$mail->Timeout = 20;
$mail->SMTPOptions = ['ssl' => [
    'verify_peer' => false,
    'verify_peer_name' => false,
    'allow_self_signed' => true,
]];
$mail->setFrom(getenv('MAIL_FROM'));
$mail->addAddress(getenv('MAIL_TO'));
$mail->Subject = getenv('MAIL_SUBJECT');
$mail->Body = getenv('MAIL_BODY');

$ok = $mail->send();
$smtp = $mail->getSMTPInstance();
echo 'result=', $ok ? 'ok' : 'fail', "\n";
echo 'transaction_id=', (string)$smtp->getLastTransactionID(), "\n";
$dataReply = '';
foreach ($replies as $r) {
    if (strpos($r, 'queued as') !== false) {
        $dataReply = $r;
    }
}
echo 'data_reply=', $dataReply, "\n";
echo 'message_id=', $mail->getLastMessageID(), "\n";
echo 'error=', str_replace(["\r", "\n"], ' ', $mail->ErrorInfo), "\n";
exit($ok ? 0 : 1);
