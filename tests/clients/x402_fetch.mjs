#!/usr/bin/env node
// Pays chainfront with the official x402 JS client, unmodified:
// @x402/fetch's wrapFetchWithPayment, @x402/evm's exact scheme, a viem
// account. Prints one JSON line: status, body, payment response.
//
//   node x402_fetch.mjs --url http://127.0.0.1:8080/x402/vm-credentials/1 \
//     --payer-key 0x... [--owner-key 0x... --token-id 1] [--method POST --body '{...}']
//
// With --v1, the library's v1 path as a v1-only client sees the 402 (the
// JSON body, x402Version 1), paid with X-PAYMENT. v1 network names are fixed
// (base, base-sepolia, ...): run it against a chain the library knows.
//
// The library pays only tokens it knows by default (USDC on Base, ...); a
// local chain's USDC is opted in the way its docs say, with spend controls:
// --allow-asset NETWORK=ADDRESS[=CAP] (repeatable).
//
// The owner's signature for the VM travels in Authorization, as for
// /credentials; the client repeats it on the paid retry.

import { parseArgs } from "node:util";
import { privateKeyToAccount } from "viem/accounts";
import {
  wrapFetchWithPayment,
  x402Client,
  x402HTTPClient,
  decodePaymentResponseHeader,
} from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    method: { type: "string", default: "GET" },
    body: { type: "string" },
    "payer-key": { type: "string" },
    "owner-key": { type: "string" },
    "token-id": { type: "string" },
    v1: { type: "boolean", default: false },
    "allow-asset": { type: "string", multiple: true, default: [] },
  },
});

const payer = privateKeyToAccount(args["payer-key"]);
const client = new x402Client();
registerExactEvmScheme(client, { signer: payer });
client.setSpendControls({
  allowedAssets: args["allow-asset"].map((entry) => {
    const [network, asset, cap] = entry.split("=");
    return cap ? { network, asset, maxAmountPerPayment: cap } : { network, asset };
  }),
});
const fetchWithPayment = wrapFetchWithPayment(fetch, client);

const headers = {};
if (args["owner-key"]) {
  const owner = privateKeyToAccount(args["owner-key"]);
  const signature = await owner.signMessage({ message: `ClawCloud Access Request: ${args["token-id"]}` });
  headers.Authorization = `Bearer ${signature}`;
}
if (args.body) headers["Content-Type"] = "application/json";

async function payV1() {
  const http = new x402HTTPClient(client);
  const first = await fetch(args.url, { method: args.method, headers, body: args.body });
  if (first.status !== 402) return first;
  // A v1 client reads the requirements from the body only.
  const required = http.getPaymentRequiredResponse(() => null, await first.json());
  const payload = await client.createPaymentPayload(required);
  const paid = { ...headers, ...http.encodePaymentSignatureHeader(payload) };
  if (!paid["X-PAYMENT"]) throw new Error(`expected a v1 X-PAYMENT header, got ${Object.keys(paid)}`);
  return fetch(args.url, { method: args.method, headers: paid, body: args.body });
}

const response = args.v1
  ? await payV1()
  : await fetchWithPayment(args.url, { method: args.method, headers, body: args.body });
const text = await response.text();
let body;
try {
  body = JSON.parse(text);
} catch {
  body = text;
}
const header = response.headers.get("PAYMENT-RESPONSE") ?? response.headers.get("X-PAYMENT-RESPONSE");
console.log(
  JSON.stringify({
    status: response.status,
    body,
    paymentResponse: header ? decodePaymentResponseHeader(header) : null,
  }),
);
