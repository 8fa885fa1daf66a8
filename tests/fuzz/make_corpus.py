#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets from the payloads the project already has:
the JSON blocks of ../shared/design/PROTOCOL.md (placeholders filled in), the JSON in the
contacts seeds (../shared/seeds/), the bodies the integration tests post (tests/helpers.py,
tests/test_fuzz.py, tests/test_cloud.py) and the configuration files (deploy/*.conf and the
tests' own).  Run it again when those change:

    /usr/bin/python3 tests/fuzz/make_corpus.py

Files are named by the hash of their content, so a re-run adds what is new and keeps the rest
(libFuzzer's merges may have added inputs of their own).  The regression inputs
(tests/fuzz/regressions/) are written by hand, never by this script."""
import hashlib
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "tests"))

import helpers as h  # noqa: E402
from daemon import ACK_OVERRIDES, default_config, merge_config, render_config  # noqa: E402

# Placeholders of PROTOCOL.md, filled with values from several countries.
FILL = {"WA_ID": "447700900123", "MSG_ID": "ABGGFlA5FpafAgo6EhgRWvKBtjZs",
        "UNIX_SECONDS": "1602535238", "TEXT": "User A changed", "HASH": "Rc/eg9RQ0JA=",
        "AS_GIVEN": "+54 9 11 5612-1008", "WABA_ID": "102290129340398", "PNID": "106540352242922",
        "MILLISECONDS": "1602535238000", "BOOL": "false", "N": "480"}


def json_blocks(text):
    """Every balanced {...} in text that parses as JSON once placeholders are filled."""
    out = []
    for start in [m.start() for m in re.finditer(r"\{", text)]:
        depth = 0
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    chunk = text[start:i + 1]
                    for k, v in FILL.items():
                        chunk = re.sub(r"\b%s\b" % k, v, chunk)
                    chunk = chunk.replace("…", "").replace("sent|delivered|read|failed", "failed")
                    chunk = re.sub(r"\bBOOL\b|true \| false|false \| true", "true", chunk)
                    try:
                        obj = json.loads(chunk)
                    except ValueError:
                        break
                    out.append(obj)
                    break
    return out


def webhook_seeds():
    seeds = []
    proto = (SHARED / "design" / "PROTOCOL.md").read_text()
    seeds += [o for o in json_blocks(proto) if isinstance(o, dict)]
    for f in sorted((SHARED / "seeds").glob("*.txt")):
        seeds += [o for o in json_blocks(f.read_text()) if isinstance(o, dict)]
    uk, ar, india, br, de, us = ("447700900123", "5491156121008", "919876543210",
                                 "5511987654321", "4915123456789", "16315551234")
    t = 1602535238
    seeds += [
        h.identity_change(uk, "Rc/eg9RQ0JA=", t),
        h.identity_change(ar, "UKD6Y/5SqDU=", t, user_field="user"),
        h.inbound_text(india, identity=h.identity_obj("AbCdEf012345=", t * 1000, True)),
        h.number_changed(br, de),
        h.contacts_callback(h.contact_result("+49 151 23456789", "valid", de),
                            h.contact_result("6315551234", "invalid")),
        h.statuses(h.status_item("gBEGkYiEB1VXAglK1ZEqA1YKPrU", us, "failed",
                                 errors=[{"code": 480, "title": "Identity not acknowledged"}])),
        h.errors_body(1014, "Internal error", "Upstream went away"),
        {"errors": [{"code": 1e300, "title": "big"}], "statuses": [{"id": "x", "status": "read",
                                                                     "timestamp": 1e15}]},
    ]
    try:
        import test_fuzz
        seeds += test_fuzz.valid_bodies()
    except Exception:  # noqa: BLE001 - the seeds above are enough without it
        pass
    import test_cloud
    seeds.append(test_cloud.cloud_body(br, "Xy12AbCd+/==", "wamid.HBgLNTUxMTk4NzY1NDMyMRUCABIYFjNFQjA"))
    seeds.append({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [{
            "id": "wamid.X", "status": "failed", "timestamp": "1602535238",
            "recipient_id": india, "recipient_user_id": "US.13491208655302741918",
            "recipient_identity_key_hash": "Zz9/Qw==",
            "errors": [{"code": 137000, "title": "identity key mismatch"}]}],
            "messages": [{"from_user_id": "IN.8837261", "id": "wamid.Y", "timestamp": "1602535239",
                          "type": "system", "system": {"type": "user_changed_user_id",
                                                       "user_id": "IN.8837262"}}]}}]}]})
    return [json.dumps(s, ensure_ascii=False).encode() for s in seeds]


def config_seeds():
    out = [p.read_bytes() for p in sorted((ROOT / "deploy").glob("waguard*.conf"))]
    cfg = default_config(8080, "redis://127.0.0.1:6379/0", "http://127.0.0.1:9090")
    out.append(render_config(cfg).encode())
    out.append(render_config(merge_config(cfg, ACK_OVERRIDES)).encode())
    out.append(b"[server]\nlisten = [::1]:8443\n[redis]\nurl = unix:/run/redis/redis.sock\n"
               b"[upstream]\napi = cloud\nauth = header\nheader_name = D360-API-KEY\n"
               b"token_file = webhook_token\n[webhook]\nhmac_secret_file = hmac_secret\n"
               b"[gate]\nhome_country_code = +44\nfail = open\nrequire_valid_contact = yes\n"
               b"[identity]\nack = manual\nfirst_seen = hold\n[log]\nformat = json\nlevel = notice\n")
    out.append(b"[server]\nlisten = 0.0.0.0:8080\n[api]\ntokens_file = api_tokens\n"
               b"admin_tokens_file = admin_tokens\n[webhook]\ntoken_file = webhook_token\n")
    return out


def reply_seeds():
    """What Redis answers waguard: a transaction's replies, a function's lines, errors,
    nil and empty arrays, nesting; fed whole (first byte 0) or in pieces of 1 and 7."""
    wires = [b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$-1\r\n*4\r\n$10\r\nQmsk1hashA\r\n$-1\r\n"
             b"$12\r\nacknowledged\r\n:1\r\n",
             b"$13\r\n1 0 0 0 0 0 0\r\n", b"-NOPERM no permissions to run the 'set' command\r\n",
             b":0\r\n:-42\r\n$-1\r\n*-1\r\n*0\r\n$0\r\n\r\n",
             b"*3\r\n-ERR wrong number of arguments\r\n:7\r\n*2\r\n*1\r\n$1\r\nx\r\n*0\r\n",
             b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", b"*2\r\n$3\r\nabc\r\n!bad\r\n"]
    return [bytes([step]) + w for w in wires for step in (0, 1, 7)]


def write(target, blobs):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    n = 0
    for b in blobs:
        p = d / hashlib.sha1(b).hexdigest()
        if not p.exists():
            p.write_bytes(b)
            n += 1
    print("%s: %d new, %d in all" % (d.relative_to(ROOT), n, len(list(d.iterdir()))))


if __name__ == "__main__":
    write("webhook_parse", webhook_seeds())
    write("config", config_seeds())
    write("reply", reply_seeds())
