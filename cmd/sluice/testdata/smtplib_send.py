"""Send one message with Python's smtplib over STARTTLS and print the
outcome as JSON for the Go test.

usage: smtplib_send.py HOST PORT USER PASSWORD MECH FROM TO SUBJECT BODY

MECH is PLAIN or LOGIN (credentials in the AUTH command as an initial
response), or PLAIN-NOIR or LOGIN-NOIR (no initial response: the server asks
with a 334 challenge first). BODY may hold "\n"; lines starting with "." are
dot-stuffed by smtplib and must arrive un-stuffed.
"""
import json
import smtplib
import ssl
import sys


def main():
    host, port, user, password, mech, sender, rcpt, subject, body = sys.argv[1:10]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test server has a self-signed certificate

    out = {}
    with smtplib.SMTP(host, int(port), local_hostname="client.sluice.test", timeout=20) as s:
        s.ehlo()
        out["auth_before_tls"] = s.has_extn("auth")
        s.starttls(context=ctx)
        s.ehlo()
        out["auth_after_tls"] = s.esmtp_features.get("auth", "")
        s.user, s.password = user, password
        if mech == "PLAIN":
            code, resp = s.auth("PLAIN", s.auth_plain)
        elif mech == "PLAIN-NOIR":
            code, resp = s.auth("PLAIN", s.auth_plain, initial_response_ok=False)
        elif mech == "LOGIN":
            code, resp = s.auth("LOGIN", s.auth_login)
        elif mech == "LOGIN-NOIR":
            code, resp = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        else:
            raise SystemExit("unknown mechanism " + mech)
        out["auth"] = [code, resp.decode()]
        code, resp = s.mail(sender)
        out["mail"] = [code, resp.decode()]
        code, resp = s.rcpt(rcpt)
        out["rcpt"] = [code, resp.decode()]
        msg = (
            "From: " + sender + "\r\n"
            "To: " + rcpt + "\r\n"
            "Subject: " + subject + "\r\n"
            "\r\n" + body.replace("\n", "\r\n") + "\r\n"
        )
        out["message"] = msg
        code, resp = s.data(msg.encode())
        out["data"] = [code, resp.decode()]
    print(json.dumps(out))


main()
