// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title Multicall
/// @notice Runs several calls in one transaction, as an ERC-4337 bundle or a smart-wallet batch does: each call's
/// `msg.sender` is this contract, and one failing call reverts them all. Tests use it to put purchases, submissions
/// and plain deposits of several payers into a single transaction (with `MockSmartWallet`s this contract owns as the
/// payers), which is how deposits and payments share a transaction hash on Base.
contract Multicall {
    struct Call {
        address target;
        uint256 value;
        bytes data;
    }

    error CallFailed(uint256 index, bytes returnData);

    /// @notice Runs `calls` in order and returns their results; reverts with the failing call's index and data.
    function aggregate(Call[] calldata calls) external payable returns (bytes[] memory results) {
        results = new bytes[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            (bool ok, bytes memory ret) = calls[i].target.call{value: calls[i].value}(calls[i].data);
            if (!ok) revert CallFailed(i, ret);
            results[i] = ret;
        }
    }

    receive() external payable {}
}
