#!/usr/bin/env python3
"""Pays chainfront with the official x402 Python client, unmodified.

Modes (each prints one JSON line: status, body, payment response):
  requests  x402ClientSync + wrapRequestsWithPayment (x402 v2, PAYMENT-SIGNATURE)
  httpx     x402Client + x402HttpxClient (async, x402 v2)
  v1        the library's v1 path, as a v1-only client sees the 402: the JSON
            body (x402Version 1), paid with X-PAYMENT. v1 network names are
            fixed (base, base-sepolia, ...), so this mode needs a chain the
            library knows, e.g. an anvil started with chain id 84532.

The payer is an eth_account LocalAccount (the library wraps it itself).
The library pays only tokens it knows by default (USDC on Base, ...); a
local chain's USDC is opted in the way its docs say, with spend controls:
--allow-asset NETWORK=ADDRESS[=CAP] (repeatable).
The owner's signature for the VM travels in Authorization, as for
/credentials; the x402 client copies it onto the paid retry.

  x402_python.py MODE --url http://127.0.0.1:8080/x402/vm-credentials/1 \
      --payer-key 0x... [--owner-key 0x... --token-id 1]
"""

import argparse
import asyncio
import base64
import json
import sys

from eth_account import Account
from eth_account.messages import encode_defunct


def owner_headers(args):
    if not args.owner_key:
        return {}
    message = f"ClawCloud Access Request: {args.token_id}"
    signed = Account.sign_message(encode_defunct(text=message), private_key=args.owner_key)
    # Current HexBytes.hex() has no 0x prefix, as real clients send it.
    return {"Authorization": f"Bearer {signed.signature.hex()}"}


def spend_controls(args):
    allowed = []
    for entry in args.allow_asset or []:
        parts = entry.split("=")
        asset = {"network": parts[0], "asset": parts[1]}
        if len(parts) > 2:
            asset["max_amount_per_payment"] = parts[2]
        allowed.append(asset)
    return {"allowed_assets": allowed}


def decode(header):
    if not header:
        return None
    return json.loads(base64.b64decode(header))


def report(status, body, headers):
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = body
    print(
        json.dumps(
            {
                "status": status,
                "body": parsed,
                "paymentResponse": decode(headers.get("PAYMENT-RESPONSE"))
                or decode(headers.get("X-PAYMENT-RESPONSE")),
            }
        )
    )


def with_requests(args, payer):
    import requests
    from x402 import x402ClientSync
    from x402.http.clients import wrapRequestsWithPayment
    from x402.mechanisms.evm.exact import register_exact_evm_client

    client = register_exact_evm_client(x402ClientSync(), payer)
    client.set_spend_controls(spend_controls(args))
    session = wrapRequestsWithPayment(requests.Session(), client)
    r = session.request(args.method, args.url, headers=owner_headers(args), json=args.json)
    report(r.status_code, r.text, r.headers)


async def with_httpx(args, payer):
    from x402 import x402Client
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import register_exact_evm_client

    client = register_exact_evm_client(x402Client(), payer)
    client.set_spend_controls(spend_controls(args))
    async with x402HttpxClient(client) as http:
        r = await http.request(args.method, args.url, headers=owner_headers(args), json=args.json)
        report(r.status_code, r.text, r.headers)


def with_v1(args, payer):
    import requests
    from x402 import x402ClientSync
    from x402.http import x402HTTPClientSync
    from x402.mechanisms.evm.exact import register_exact_evm_client

    client = register_exact_evm_client(x402ClientSync(), payer)
    client.set_spend_controls(spend_controls(args))
    http = x402HTTPClientSync(client)
    first = requests.request(args.method, args.url, headers=owner_headers(args), json=args.json)
    if first.status_code != 402:
        report(first.status_code, first.text, first.headers)
        return
    # A v1 client reads the requirements from the body only.
    required = http.get_payment_required_response(lambda _name: None, first.json())
    payload = client.create_payment_payload(required)
    headers = dict(owner_headers(args))
    headers.update(http.encode_payment_signature_header(payload))
    if "X-PAYMENT" not in headers:
        raise SystemExit(f"expected a v1 X-PAYMENT header, got {sorted(headers)}")
    r = requests.request(args.method, args.url, headers=headers, json=args.json)
    report(r.status_code, r.text, r.headers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["requests", "httpx", "v1"])
    p.add_argument("--url", required=True)
    p.add_argument("--method", default="GET")
    p.add_argument("--body", help="JSON body")
    p.add_argument("--payer-key", required=True)
    p.add_argument("--owner-key")
    p.add_argument("--token-id")
    p.add_argument("--allow-asset", action="append", help="NETWORK=ADDRESS[=CAP]")
    args = p.parse_args()
    args.json = json.loads(args.body) if args.body else None
    payer = Account.from_key(args.payer_key)
    if args.mode == "requests":
        with_requests(args, payer)
    elif args.mode == "httpx":
        asyncio.run(with_httpx(args, payer))
    else:
        with_v1(args, payer)


if __name__ == "__main__":
    sys.exit(main())
