#!/usr/bin/env node
// The Clockchain document's JavaScript example, run for real with ethers v6
// and axios against a chainfront node on anvil: find markets, calculate
// fees, send the stake transaction, sign, submit, then read the submission
// back from its status URL. It submits twice: once with the document's
// `wallet.signMessage` (EIP-191) and once with a raw signature of
// keccak256(message). Prints the served submissions as JSON on stdout.
// Run by the integration test `markets::the_documents_javascript_example_runs_for_real`.
//
// usage: node clockchain_example.js <API_BASE> <RPC_URL> <PRIVATE_KEY>

const ethers = require('ethers');
const axios = require('axios');

const [API_BASE, RPC_URL, PRIVATE_KEY] = process.argv.slice(2);

async function readBack(res) {
    if (res.status === 201) return res.data;
    if (res.status !== 202) throw new Error(`submission refused: ${res.status} ${JSON.stringify(res.data)}`);
    const url = new URL(res.data.status_url, API_BASE).toString();
    const end = Date.now() + 60000;
    while (Date.now() < end) {
        const r = await axios.get(url, { validateStatus: () => true });
        if (r.status === 200) return r.data;
        if (r.status !== 202) throw new Error(`status ${url}: ${r.status} ${JSON.stringify(r.data)}`);
        await new Promise((ok) => setTimeout(ok, 200));
    }
    throw new Error(`submission not recorded in time: ${url}`);
}

async function createSubmission(signing) {
    // 1. Setup wallet
    const provider = new ethers.JsonRpcProvider(RPC_URL, undefined, { pollingInterval: 100 });
    const wallet = new ethers.Wallet(PRIVATE_KEY, provider);
    const treasury = (await axios.get(`${API_BASE}/health`)).data.treasury;

    // 2. Get active markets
    const marketsRes = await axios.get(`${API_BASE}/markets`);
    const market = marketsRes.data.markets[0];

    // 3. Calculate fees
    const stakeAmount = '0.1';
    const feesRes = await axios.post(`${API_BASE}/calculate_fees`, {
        initial_stake_amount: stakeAmount,
        currency: 'ETH'
    });
    const totalRequired = feesRes.data.total_required;

    // 4. Send transaction
    const tx = await wallet.sendTransaction({ to: treasury, value: ethers.parseEther(totalRequired) });
    const receipt = await tx.wait();
    if (receipt.status !== 1) throw new Error('stake transaction reverted');
    const txHash = tx.hash;

    // 5. Create signature
    const message = `${market.market_id}:My prediction:${stakeAmount}:${txHash}`;
    const signature = signing === 'signMessage'
        ? await wallet.signMessage(message)
        : wallet.signingKey.sign(ethers.keccak256(ethers.toUtf8Bytes(message))).serialized;

    // 6. Submit (the market's first submission is its original)
    const submission = await axios.post(`${API_BASE}/submissions`, {
        market_id: market.market_id,
        creator_wallet: wallet.address,
        predicted_text: 'My prediction',
        submission_type: market.has_original ? 'competitor' : 'original',
        initial_stake_amount: stakeAmount,
        currency: 'ETH',
        transaction_hash: txHash,
        signature: signature
    }, { validateStatus: () => true });

    provider.destroy();
    return readBack(submission);
}

(async () => {
    const served = [];
    for (const signing of ['signMessage', 'rawKeccak']) {
        served.push(await createSubmission(signing));
    }
    console.log(JSON.stringify(served));
})().catch((e) => {
    console.error(e);
    process.exit(1);
});
