// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {IERC721Receiver} from "@openzeppelin/contracts/token/ERC721/IERC721Receiver.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

/// @title MockSmartWallet
/// @notice A minimal contract wallet for tests and the dev stack: it holds tokens and NFTs, runs calls its owner
/// sends, and approves (ERC-1271) exactly the signatures its owner makes. A VM NFT held by this wallet is therefore
/// accessible with the owner key's signature, as with a real smart-contract wallet (Safe, Coinbase Smart Wallet).
contract MockSmartWallet is IERC1271, IERC721Receiver {
    /// @notice The key (or, recursively, the ERC-1271 contract) whose signatures this wallet approves.
    address public owner;

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOwner();
    error ZeroOwner();
    error CallFailed(bytes returnData);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(address owner_) {
        if (owner_ == address(0)) revert ZeroOwner();
        owner = owner_;
        emit OwnershipTransferred(address(0), owner_);
    }

    /// @inheritdoc IERC1271
    /// @dev OpenZeppelin's SignatureChecker: ECDSA for an EOA owner (rejecting high-s and malformed signatures
    /// without reverting), ERC-1271 for a contract owner.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        return SignatureChecker.isValidSignatureNow(owner, hash, signature)
            ? IERC1271.isValidSignature.selector
            : bytes4(0xffffffff);
    }

    /// @notice Runs one call from the wallet (e.g. approve USDC, then purchaseVM).
    function execute(address target, uint256 value, bytes calldata data)
        external
        onlyOwner
        returns (bytes memory result)
    {
        bool ok;
        (ok, result) = target.call{value: value}(data);
        if (!ok) revert CallFailed(result);
    }

    /// @notice Hands the wallet to another key.
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroOwner();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    /// @inheritdoc IERC721Receiver
    function onERC721Received(address, address, uint256, bytes calldata) external pure returns (bytes4) {
        return IERC721Receiver.onERC721Received.selector;
    }

    receive() external payable {}
}
