#!/usr/bin/env python3
"""The Clockchain document's Python example, run for real.

Follows the document step by step (find markets, calculate fees, send the
blockchain transaction, sign, submit) with web3.py and eth_account against a
chainfront node on anvil, then reads the submission back from its status URL.
It submits twice: once signed the document's way, a raw signature of
keccak256(message) (`signHash`, today `unsafe_sign_hash`, sent as
`HexBytes.hex()` without 0x), and once with EIP-191 `sign_message`.

Prints the submissions as the node serves them, as JSON on stdout.
Run by the integration test `markets::the_documents_python_example_runs_for_real`.
"""

import argparse
import json
import sys
import time
from urllib.parse import urlsplit

import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3


def send_stake(w3, account, to, total_required):
    """3. Send the blockchain transaction: stake + fee in ETH to the treasury."""
    tx = {
        "from": account.address,
        "to": to,
        "value": Web3.to_wei(total_required, "ether"),
        "nonce": w3.eth.get_transaction_count(account.address),
        "chainId": w3.eth.chain_id,
        "maxFeePerGas": w3.to_wei(20, "gwei"),
        "maxPriorityFeePerGas": w3.to_wei(1, "gwei"),
    }
    tx["gas"] = w3.eth.estimate_gas(tx)
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    if receipt["status"] != 1:
        sys.exit(f"stake transaction reverted: {receipt}")
    return tx_hash


def read_back(api_base, answer, deadline_s=60):
    """Polls the submission's status URL until it is on chain and indexed."""
    if answer.status_code == 201:
        return answer.json()
    if answer.status_code != 202:
        sys.exit(f"submission refused: {answer.status_code} {answer.text}")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(api_base))
    url = origin + answer.json()["status_url"]
    end = time.time() + deadline_s
    while time.time() < end:
        r = requests.get(url)
        if r.status_code == 200:
            return r.json()
        if r.status_code != 202:
            sys.exit(f"status {url}: {r.status_code} {r.text}")
        time.sleep(0.2)
    sys.exit(f"submission not recorded within {deadline_s}s: {url}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True, help="e.g. http://127.0.0.1:8080/ai_agent/v1")
    p.add_argument("--rpc", required=True)
    p.add_argument("--key", required=True)
    args = p.parse_args()

    # Configuration
    API_BASE = args.api
    PRIVATE_KEY = args.key
    account = Account.from_key(PRIVATE_KEY)
    w3 = Web3(Web3.HTTPProvider(args.rpc))
    treasury = Web3.to_checksum_address(requests.get(f"{API_BASE}/health").json()["treasury"])

    submissions = []
    for signing in ("unsafe_sign_hash", "sign_message"):
        # 1. Find active markets
        response = requests.get(f"{API_BASE}/markets")
        markets = response.json()["markets"]

        # 2. Select a market and calculate fees
        market = markets[0]
        stake_amount = "0.1"  # ETH

        fees_response = requests.post(
            f"{API_BASE}/calculate_fees",
            json={"initial_stake_amount": stake_amount, "currency": "ETH"},
        )
        fees = fees_response.json()
        total_required = fees["total_required"]

        # 3. Send blockchain transaction (example for ETH)
        tx_hash = send_stake(w3, account, treasury, total_required)
        # Current HexBytes.hex() has no 0x; the node takes both forms.
        transaction_hash = tx_hash.hex() if signing == "unsafe_sign_hash" else w3.to_hex(tx_hash)

        # 4. Create signature
        message = f"{market['market_id']}:My prediction text:{stake_amount}:{transaction_hash}"
        if signing == "unsafe_sign_hash":
            message_hash = Web3.keccak(text=message)
            signature = account.unsafe_sign_hash(message_hash)
        else:
            signature = account.sign_message(encode_defunct(text=message))

        # 5. Submit prediction (the market's first one is its original)
        submission_data = {
            "market_id": market["market_id"],
            "creator_wallet": account.address,
            "predicted_text": "My prediction text",
            "submission_type": "competitor" if market["has_original"] else "original",
            "initial_stake_amount": stake_amount,
            "currency": "ETH",
            "transaction_hash": transaction_hash,
            "signature": signature.signature.hex(),
        }

        response = requests.post(f"{API_BASE}/submissions", json=submission_data)

        submissions.append(read_back(API_BASE, response))

    print(json.dumps(submissions))


if __name__ == "__main__":
    main()
