#!/usr/bin/env python3
"""A Compute API client written the way agents write one: eth_account for
keys and signatures, requests for HTTP. It deposits USDC to the treasury on
chain, proves the deposit (POST /v1/deposit), signs in for a token, runs a
storage job and a web job, then reads its balance and usage.

Usage:
  compute_client.py --api URL --rpc URL --key 0x... --usdc 0x... \
      --treasury 0x... --page URL [--public-url URL] [--network local] [--amount 2.5]

Prints a JSON summary on success; exits non-zero with a message on error.
"""
import argparse
import json
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal

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


def transfer_usdc(rpc_url, account, usdc, to, units):
    data = "0xa9059cbb" + to.lower().replace("0x", "").rjust(64, "0") + hex(units)[2:].rjust(64, "0")
    chain_id = int(rpc(rpc_url, "eth_chainId", []), 16)
    nonce = int(rpc(rpc_url, "eth_getTransactionCount", [account.address, "pending"]), 16)
    tx = {"to": usdc, "data": data, "nonce": nonce, "gas": 100000, "maxFeePerGas": 20_000_000_000,
          "maxPriorityFeePerGas": 1_000_000_000, "chainId": chain_id, "value": 0, "type": 2}
    signed = account.sign_transaction(tx)
    raw = signed.raw_transaction.hex()
    tx_hash = rpc(rpc_url, "eth_sendRawTransaction", [raw if raw.startswith("0x") else "0x" + raw])
    for _ in range(200):
        receipt = rpc(rpc_url, "eth_getTransactionReceipt", [tx_hash])
        if receipt:
            if receipt["status"] != "0x1":
                raise RuntimeError("deposit reverted")
            return tx_hash
        time.sleep(0.05)
    raise RuntimeError("deposit not mined")


def check(resp, *ok):
    if resp.status_code not in (ok or (200,)):
        raise RuntimeError(f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text}")
    # Money comes as exact decimal numbers: read them as Decimal, never float.
    return json.loads(resp.text, parse_float=Decimal)


def sign_in(api, public_url, account):
    """EIP-4361: the node's nonce, domain and chain id; a signed message; a JWT."""
    n = check(requests.get(f"{api}/auth/nonce", timeout=30))
    issued = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = (
        f"{n['domain']} wants you to sign in with your Ethereum account:\n"
        f"{account.address}\n\n"
        "Sign in to chainfront.\n\n"
        f"URI: {public_url}\n"
        "Version: 1\n"
        f"Chain ID: {n['chainId']}\n"
        f"Nonce: {n['nonce']}\n"
        f"Issued At: {issued}"
    )
    sig = account.sign_message(encode_defunct(text=message)).signature.hex()
    return check(requests.post(f"{api}/auth/login", json={"message": message, "signature": sig}, timeout=30))["token"]


def wait_job(api, job_id):
    for _ in range(600):
        job = check(requests.get(f"{api}/v1/jobs/{job_id}", timeout=30))
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} did not finish")


def main():
    p = argparse.ArgumentParser()
    for a in ("--api", "--rpc", "--key", "--usdc", "--treasury", "--page"):
        p.add_argument(a, required=True)
    p.add_argument("--network", default="local")
    p.add_argument("--public-url", help="the node's api.public_url (default: --api)")
    p.add_argument("--amount", default="2.5")
    args = p.parse_args()
    api = args.api.rstrip("/")
    account = Account.from_key(args.key)
    amount = Decimal(args.amount)

    tx_hash = transfer_usdc(args.rpc, account, args.usdc, args.treasury, int(amount * 1_000_000))
    proof = {"txHash": tx_hash, "network": args.network, "amountUsd": float(amount), "token": "USDC",
             "timestamp": int(time.time() * 1000)}
    credited = check(requests.post(f"{api}/v1/deposit", json={"wallet": account.address, "paymentProof": proof}, timeout=60))
    assert credited["success"] and credited["credits"] == amount, credited

    public_url = (args.public_url or api).rstrip("/")
    headers = {"Authorization": f"Bearer {sign_in(api, public_url, account)}"}
    put = check(requests.post(f"{api}/v1/compute/storage", headers=headers, timeout=30, json={
        "wallet": account.address,
        "payload": {"operation": "put", "key": "notes/hello.txt", "content": "Hello World", "contentType": "text/plain", "ttl": 3600}}))
    assert put["status"] == "pending", put
    put = wait_job(api, put["jobId"])
    got = check(requests.post(f"{api}/v1/compute/storage", headers=headers, timeout=30, json={
        "wallet": account.address, "payload": {"operation": "get", "key": "notes/hello.txt"}}))
    got = wait_job(api, got["jobId"])
    assert got["result"]["content"] == "Hello World", got
    web = check(requests.post(f"{api}/v1/compute/web", headers=headers, timeout=30, json={
        "wallet": account.address, "payload": {"url": args.page, "method": "GET", "extract": {"title": "title", "heading": "h1"}}}))
    web = wait_job(api, web["jobId"])
    assert web["status"] == "completed", web

    balance = check(requests.get(f"{api}/v1/balance", params={"wallet": account.address}, timeout=30))
    usage = check(requests.get(f"{api}/v1/usage", params={"period": "day"}, headers=headers, timeout=30))
    spent = put["cost"] + got["cost"] + web["cost"]
    assert balance["totalSpent"] == spent and balance["available"] == amount - spent, (balance, spent)
    assert usage["totalCost"] == spent, usage
    print(json.dumps({
        "credited": str(credited["credits"]),
        "storage": put["result"], "web": web["result"].get("extracted"),
        "balance": {k: str(v) for k, v in balance.items()},
        "usage": {"totalCost": str(usage["totalCost"]), "totalRequests": usage["totalRequests"]},
    }))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - a client prints why it failed
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
