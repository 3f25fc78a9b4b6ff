//! The one transaction sender (`chainfront::chain`): distinct nonces under
//! concurrency, one transaction per id (also across a "crash": a fresh sender
//! resumes the recorded transaction), refusal before signing on a revert, and
//! recovery when another transaction takes a recorded nonce.

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::{SolCall, SolInterface};
use chainfront::chain::{SendError, SenderConfig, TxSender};
use chainfront_indexer::contracts::SubmissionStakes;
use chainfront_indexer::retry::RetryPolicy;
use chainfront_indexer::rpc::Rpc;

use crate::harness::Stack;

/// The signer these tests send with (not used by the harness's seeding).
const KEY: usize = 7;

async fn sender(stack: &Stack, cfg: SenderConfig) -> TxSender {
    let rpc = Rpc::new(
        &[stack.anvil.endpoint()],
        RetryPolicy::default(),
        Duration::from_secs(5),
    )
    .expect("rpc");
    let redis = chainfront_indexer::conn::connect(&stack.redis.url())
        .await
        .expect("redis");
    TxSender::new(rpc, stack.signer(KEY), 31337, redis, cfg)
}

/// A plain account (low addresses are precompiles, which refuse value).
fn recipient(i: u8) -> Address {
    Address::left_padding_from(&[0xca, 0xfe, i])
}

fn pay(to: Address, wei: u64) -> TransactionRequest {
    TransactionRequest::default()
        .with_to(to)
        .with_value(U256::from(wei))
}

async fn nonce_of(stack: &Stack) -> u64 {
    stack
        .deployer
        .get_transaction_count(stack.signer(KEY).address())
        .await
        .expect("nonce")
}

#[tokio::test]
async fn concurrent_sends_get_distinct_nonces_and_each_id_is_sent_once() {
    let stack = Stack::start().await;
    let s = sender(&stack, SenderConfig::default()).await;
    let first = nonce_of(&stack).await;
    let sends = (0..20u64).map(|i| {
        let s = &s;
        async move {
            s.send(&format!("pay-{i}"), pay(recipient(i as u8), i + 1))
                .await
        }
    });
    let receipts = futures_util::future::join_all(sends).await;
    let mut hashes = std::collections::BTreeSet::new();
    for r in &receipts {
        let r = r.as_ref().expect("mined");
        assert!(r.status());
        hashes.insert(r.transaction_hash);
    }
    assert_eq!(hashes.len(), 20);
    assert_eq!(nonce_of(&stack).await, first + 20);
    for i in 0..20u64 {
        let balance = stack
            .deployer
            .get_balance(recipient(i as u8))
            .await
            .expect("balance");
        assert_eq!(
            balance,
            U256::from(i + 1),
            "recipient {i} paid exactly once"
        );
    }

    // The same id again (even with another body) is the same transaction.
    let again = s
        .send("pay-3", pay(recipient(3), 999))
        .await
        .expect("replayed");
    assert_eq!(
        again.transaction_hash,
        receipts[3].as_ref().expect("r").transaction_hash
    );
    assert_eq!(nonce_of(&stack).await, first + 20, "nothing new was sent");
}

#[tokio::test]
async fn a_send_cut_short_is_resumed_by_a_fresh_sender_without_a_second_transaction() {
    let stack = Stack::start().await;
    let _: () = stack
        .deployer
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .expect("automine off");
    let short = SenderConfig {
        receipt_timeout: Duration::from_millis(300),
        ..SenderConfig::default()
    };
    let first = nonce_of(&stack).await;
    let to = recipient(0x42);
    let pending = sender(&stack, short)
        .await
        .send("resume-me", pay(to, 5))
        .await;
    let Err(SendError::Pending { hash }) = pending else {
        panic!("expected Pending, got {pending:?}");
    };

    // A new process (fresh sender, same Redis) resumes; the block is mined meanwhile.
    let fresh = sender(&stack, SenderConfig::default()).await;
    let resumed = fresh.send("resume-me", pay(to, 5));
    let mine = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _: String = stack
            .deployer
            .raw_request("evm_mine".into(), ())
            .await
            .expect("mine");
    };
    let (receipt, ()) = tokio::join!(resumed, mine);
    let receipt = receipt.expect("mined");
    assert_eq!(
        receipt.transaction_hash, hash,
        "the recorded transaction, not a new one"
    );
    assert_eq!(nonce_of(&stack).await, first + 1);
    assert_eq!(
        stack.deployer.get_balance(to).await.expect("balance"),
        U256::from(5)
    );
}

#[tokio::test]
async fn a_call_that_would_revert_is_refused_before_anything_is_signed() {
    let stack = Stack::start().await;
    let s = sender(&stack, SenderConfig::default()).await;
    let first = nonce_of(&stack).await;
    // Only the operator may record submissions; KEY is not the operator.
    let call = SubmissionStakes::recordSubmissionCall {
        marketId: Default::default(),
        creator: Address::with_last_byte(1),
        submissionType: 0,
        predictedText: "x".into(),
        stakeToken: Address::ZERO,
        stake: U256::from(1),
        paymentTxHash: B256::repeat_byte(1),
    };
    let tx = TransactionRequest::default()
        .with_to(stack.deployment.submission_stakes.expect("stakes"))
        .with_input(call.abi_encode());
    let err = s.send("record-1", tx).await.expect_err("reverts");
    let SendError::WouldRevert {
        data: Some(data), ..
    } = err
    else {
        panic!("expected WouldRevert with data, got {err:?}");
    };
    let decoded = SubmissionStakes::SubmissionStakesErrors::abi_decode(&data).expect("decodes");
    assert!(
        matches!(
            decoded,
            SubmissionStakes::SubmissionStakesErrors::NotOperator(_)
        ),
        "{decoded:?}"
    );
    assert_eq!(
        s.record("record-1").await.expect("redis"),
        None,
        "nothing recorded"
    );
    assert_eq!(nonce_of(&stack).await, first, "nothing sent");
}

#[tokio::test]
async fn a_recorded_transaction_whose_nonce_went_elsewhere_is_signed_anew_once() {
    let stack = Stack::start().await;
    let _: () = stack
        .deployer
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .expect("automine off");
    let short = SenderConfig {
        receipt_timeout: Duration::from_millis(200),
        ..SenderConfig::default()
    };
    let s = sender(&stack, short).await;
    let to = recipient(0x51);
    let Err(SendError::Pending { hash: first_hash }) = s.send("moved", pay(to, 7)).await else {
        panic!("expected Pending");
    };
    let rec = s.record("moved").await.expect("redis").expect("recorded");

    // Another tool with the same key replaces it: same nonce, higher fees.
    let other = stack.wallet(KEY);
    let replacement = pay(recipient(0x99), 1)
        .with_nonce(rec.nonce)
        .with_gas_limit(21_000)
        .with_max_fee_per_gas(100_000_000_000)
        .with_max_priority_fee_per_gas(50_000_000_000);
    let _ = other
        .send_transaction(replacement)
        .await
        .expect("replacement accepted");
    let _: String = stack
        .deployer
        .raw_request("evm_mine".into(), ())
        .await
        .expect("mine");
    let _: () = stack
        .deployer
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .expect("automine on");

    let receipt = sender(&stack, SenderConfig::default())
        .await
        .send("moved", pay(to, 7))
        .await
        .expect("signed anew and mined");
    assert_ne!(receipt.transaction_hash, first_hash);
    assert_eq!(
        stack.deployer.get_balance(to).await.expect("balance"),
        U256::from(7),
        "paid exactly once"
    );
}
