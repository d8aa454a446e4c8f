"""Drives the official `anthropic` Python SDK against a ccs endpoint (the simulator or the proxy)
and prints one JSON line with what it saw. Used by the Rust integration tests.

usage: sdk_check.py smoke  BASE_URL [--auth-token T | --api-key K] [--oauth-beta] [--ca-cert PEM]
       sdk_check.py errors BASE_URL --bad-token T [--auth-token T2 [--oauth-beta] --exhaust N]

--ca-cert: trust an https BASE_URL through this PEM file (a daemon's self-signed certificate),
the way a user of the SDK would: an httpx client with `verify` set to it.
"""
import argparse
import json
import sys

import anthropic

MODEL = "claude-sonnet-4-5-20250929"


def client(args, token=None):
    headers = {}
    if args.oauth_beta:
        headers["anthropic-beta"] = "oauth-2025-04-20"
    kw = dict(base_url=args.base_url, max_retries=0, timeout=30.0, default_headers=headers)
    if args.ca_cert:
        kw["http_client"] = anthropic.DefaultHttpxClient(verify=args.ca_cert)
    if token is not None:
        return anthropic.Anthropic(auth_token=token, **kw)
    if args.api_key:
        return anthropic.Anthropic(api_key=args.api_key, **kw)
    return anthropic.Anthropic(auth_token=args.auth_token, **kw)


def smoke(args):
    c = client(args)
    msg = c.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}])
    text = "".join(b.text for b in msg.content if b.type == "text")
    streamed = []
    events = []
    with c.messages.stream(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
        for ev in s:
            events.append(ev.type)
            if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                streamed.append(ev.delta.text)
        final = s.get_final_message()
    count = c.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "count me"}])
    return {
        "create": text,
        "stop_reason": msg.stop_reason,
        "stream": "".join(streamed),
        "stream_stop_reason": final.stop_reason,
        "events": events,
        "count": count.input_tokens,
    }


def errors(args):
    out = {}
    try:
        client(args, token=args.bad_token).messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
        out["auth"] = "no error"
    except anthropic.AuthenticationError as e:
        out["auth"] = type(e).__name__
        out["auth_status"] = e.status_code
    if args.exhaust:
        c = client(args)
        ok = 0
        for _ in range(args.exhaust):
            try:
                c.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
                ok += 1
            except anthropic.RateLimitError as e:
                out["ratelimit"] = type(e).__name__
                out["ratelimit_status"] = e.response.headers.get("anthropic-ratelimit-unified-status")
                out["retry_after"] = e.response.headers.get("retry-after")
                out["message"] = e.message
                break
        out["ok_before_limit"] = ok
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["smoke", "errors"])
    p.add_argument("base_url")
    p.add_argument("--auth-token")
    p.add_argument("--api-key")
    p.add_argument("--bad-token")
    p.add_argument("--oauth-beta", action="store_true")
    p.add_argument("--exhaust", type=int, default=0)
    p.add_argument("--ca-cert")
    args = p.parse_args()
    result = smoke(args) if args.mode == "smoke" else errors(args)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
