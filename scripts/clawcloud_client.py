#!/usr/bin/env python3
"""A ClawCloud client written the way the API document's users write one:
eth_account for keys and signatures, requests for HTTP. It buys a VM with
USDC on chain, signs in with Sign-In with Ethereum (EIP-4361: GET
/auth/nonce, POST /auth/login) and polls /credentials/:tokenId with the
token until the VM is ready. `--legacy` uses ClawCloud's documented (and
replayable) signature bearer instead.

Usage:
  clawcloud_client.py --api http://127.0.0.1:8080 --rpc http://127.0.0.1:8545 \
      --key 0x... --usdc 0x... --vm 0x... [--tier 0] [--days 7]

Prints the credentials JSON on success; exits non-zero with a message on error.
"""
import argparse
import json
import sys
import time
from datetime import datetime, timezone

import requests
from eth_account import Account
from eth_account.messages import encode_defunct


def rpc(url, method, params):
    r = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=30)
    r.raise_for_status()
    body = r.json()
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error']}")
    return body["result"]


def word(value):
    return hex(value)[2:].rjust(64, "0")


def address_word(address):
    return address.lower().replace("0x", "").rjust(64, "0")


def send(url, account, to, data, chain_id):
    nonce = int(rpc(url, "eth_getTransactionCount", [account.address, "pending"]), 16)
    tx = {
        "to": to,
        "data": data,
        "value": 0,
        "nonce": nonce,
        "gas": 400_000,
        "maxFeePerGas": 20_000_000_000,
        "maxPriorityFeePerGas": 1_000_000_000,
        "chainId": chain_id,
        "type": 2,
    }
    signed = account.sign_transaction(tx)
    tx_hash = rpc(url, "eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex().removeprefix("0x")])
    for _ in range(300):
        receipt = rpc(url, "eth_getTransactionReceipt", [tx_hash])
        if receipt:
            if int(receipt["status"], 16) != 1:
                raise RuntimeError(f"transaction {tx_hash} reverted")
            return receipt
        time.sleep(0.1)
    raise RuntimeError(f"transaction {tx_hash} not mined")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--rpc", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--usdc", required=True)
    p.add_argument("--vm", required=True)
    p.add_argument("--tier", type=int, default=0)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--legacy", action="store_true", help="sign 'ClawCloud Access Request: {tokenId}' instead of signing in")
    args = p.parse_args()

    account = Account.from_key(args.key)
    chain_id = int(rpc(args.rpc, "eth_chainId", []), 16)

    # 1. Read the tier price via getTierConfig(uint8): price is the first word.
    call = {"to": args.vm, "data": "0x" + selector("getTierConfig(uint8)") + word(args.tier)}
    price = int(rpc(args.rpc, "eth_call", [call, "latest"])[2:66], 16)
    total = price * args.days

    # 2. approve(vm, total) and 3. purchaseVM(tier, days).
    send(args.rpc, account, args.usdc, "0x" + selector("approve(address,uint256)") + address_word(args.vm) + word(total), chain_id)
    receipt = send(args.rpc, account, args.vm, "0x" + selector("purchaseVM(uint8,uint16)") + word(args.tier) + word(args.days), chain_id)
    purchased = "0x" + keccak_hex("VMPurchased(uint256,address,uint8,uint16,uint256,uint256)")
    token_id = next(int(log["topics"][1], 16) for log in receipt["logs"] if log["topics"][0] == purchased)

    # 4. Fetch SSH credentials with a sign-in token (or the legacy bearer).
    if args.legacy:
        message = encode_defunct(text=f"ClawCloud Access Request: {token_id}")
        bearer = Account.sign_message(message, private_key=args.key).signature.hex()
        if not bearer.startswith("0x"):
            bearer = "0x" + bearer
    else:
        bearer = sign_in(args.api, account)
    deadline = time.time() + 60
    while time.time() < deadline:
        r = requests.get(f"{args.api}/credentials/{token_id}", headers={"Authorization": f"Bearer {bearer}"}, timeout=10)
        if r.status_code == 200:
            print(json.dumps(r.json()))
            return 0
        if r.status_code == 429:
            # Respect the limit, as the API document asks.
            time.sleep(min(int(r.headers.get("Retry-After", "1")), 10))
            continue
        if r.status_code != 202:
            print(f"credentials: HTTP {r.status_code}: {r.text}", file=sys.stderr)
            return 1
        time.sleep(1.0)
    print("credentials: still provisioning after 60 s", file=sys.stderr)
    return 1


def sign_in(api, account):
    """EIP-4361: the node's nonce, domain and chain id; a signed message; a JWT."""
    r = requests.get(f"{api}/auth/nonce", timeout=10)
    r.raise_for_status()
    n = r.json()
    uri = api.rstrip("/")
    issued_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = (
        f"{n['domain']} wants you to sign in with your Ethereum account:\n"
        f"{account.address}\n\n"
        "Sign in to chainfront.\n\n"
        f"URI: {uri}\n"
        "Version: 1\n"
        f"Chain ID: {n['chainId']}\n"
        f"Nonce: {n['nonce']}\n"
        f"Issued At: {issued_at}"
    )
    signature = account.sign_message(encode_defunct(text=message)).signature.hex()
    r = requests.post(f"{api}/auth/login", json={"message": message, "signature": signature}, timeout=10)
    if r.status_code != 200:
        raise RuntimeError(f"sign-in: HTTP {r.status_code}: {r.text}")
    return r.json()["token"]


def keccak_hex(text):
    from eth_utils import keccak

    return keccak(text=text).hex().removeprefix("0x")


def selector(signature):
    return keccak_hex(signature)[:8]


if __name__ == "__main__":
    sys.exit(main())
