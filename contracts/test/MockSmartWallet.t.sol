// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "./Base.t.sol";
import {MockSmartWallet} from "../src/MockSmartWallet.sol";
import {MockUSDC} from "../src/MockUSDC.sol";
import {VMMarketplace} from "../src/VMMarketplace.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

contract MockSmartWalletTest is Base {
    MockSmartWallet internal wallet;

    uint256 internal constant OWNER_KEY = 0x0A11CE;
    uint256 internal constant MALLORY_KEY = 0xBAD;
    address internal owner;

    /// @dev secp256k1's group order, to build the malleated (high-s) twin of a signature.
    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    bytes4 internal constant MAGIC = 0x1626ba7e;

    function setUp() public {
        vm.warp(T0);
        owner = vm.addr(OWNER_KEY);
        wallet = new MockSmartWallet(owner);
    }

    function _sign(uint256 key, bytes32 hash) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, hash);
        return abi.encodePacked(r, s, v);
    }

    function _accessHash(string memory message) internal pure returns (bytes32) {
        return MessageHashUtils.toEthSignedMessageHash(bytes(message));
    }

    function testMagicIsTheErc1271Selector() public pure {
        assertEq(bytes32(IERC1271.isValidSignature.selector), bytes32(MAGIC));
    }

    function testApprovesTheOwnersSignature() public view {
        bytes32 hash = _accessHash("ClawCloud Access Request: 42");
        assertEq(bytes32(wallet.isValidSignature(hash, _sign(OWNER_KEY, hash))), bytes32(MAGIC));
    }

    function testRefusesOtherSignersAndOtherHashes() public view {
        bytes32 hash = _accessHash("ClawCloud Access Request: 42");
        assertTrue(wallet.isValidSignature(hash, _sign(MALLORY_KEY, hash)) != MAGIC, "mallory");
        bytes32 other = _accessHash("ClawCloud Access Request: 43");
        assertTrue(wallet.isValidSignature(other, _sign(OWNER_KEY, hash)) != MAGIC, "other message");
    }

    function testRefusesMalformedAndHighSSignaturesWithoutReverting() public view {
        bytes32 hash = _accessHash("ClawCloud Access Request: 42");
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(OWNER_KEY, hash);
        bytes memory twin = abi.encodePacked(r, bytes32(N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        assertTrue(wallet.isValidSignature(hash, twin) != MAGIC, "high s");
        assertTrue(wallet.isValidSignature(hash, abi.encodePacked(r, s)) != MAGIC, "64 bytes");
        assertTrue(wallet.isValidSignature(hash, "") != MAGIC, "empty");
        assertTrue(wallet.isValidSignature(hash, abi.encodePacked(r, s, uint8(29))) != MAGIC, "bad v");
    }

    function testNestedContractOwner() public {
        MockSmartWallet outer = new MockSmartWallet(address(wallet));
        bytes32 hash = _accessHash("ClawCloud Access Request: 7");
        assertEq(bytes32(outer.isValidSignature(hash, _sign(OWNER_KEY, hash))), bytes32(MAGIC));
        assertTrue(outer.isValidSignature(hash, _sign(MALLORY_KEY, hash)) != MAGIC, "mallory");
    }

    function testOnlyTheOwnerExecutesAndTransfers() public {
        address mallory = vm.addr(MALLORY_KEY);
        vm.prank(mallory);
        vm.expectRevert(MockSmartWallet.NotOwner.selector);
        wallet.execute(address(0), 0, "");
        vm.prank(mallory);
        vm.expectRevert(MockSmartWallet.NotOwner.selector);
        wallet.transferOwnership(mallory);

        vm.prank(owner);
        wallet.transferOwnership(mallory);
        assertEq(wallet.owner(), mallory);
        bytes32 hash = _accessHash("ClawCloud Access Request: 1");
        assertTrue(wallet.isValidSignature(hash, _sign(OWNER_KEY, hash)) != MAGIC, "old owner");
        assertEq(bytes32(wallet.isValidSignature(hash, _sign(MALLORY_KEY, hash))), bytes32(MAGIC));
    }

    function testZeroOwnerIsRefused() public {
        vm.expectRevert(MockSmartWallet.ZeroOwner.selector);
        new MockSmartWallet(address(0));
    }

    function testBuysAndHoldsAVm() public {
        MockUSDC usdc = new MockUSDC();
        VMMarketplace market = new VMMarketplace(address(usdc), address(0x7EA5), address(this));
        market.setTier(0, 2_500_000, true, "Micro");
        usdc.mint(address(wallet), 100e6);
        vm.startPrank(owner);
        wallet.execute(address(usdc), 0, abi.encodeCall(usdc.approve, (address(market), 5_000_000)));
        bytes memory ret = wallet.execute(address(market), 0, abi.encodeCall(market.purchaseVM, (0, 2)));
        vm.stopPrank();
        uint256 tokenId = abi.decode(ret, (uint256));
        assertEq(market.ownerOf(tokenId), address(wallet));
        assertTrue(market.isTokenValid(tokenId), "valid");
    }

    function testRevertsWhenTheCallFails() public {
        MockUSDC usdc = new MockUSDC();
        bytes memory inner =
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, address(wallet), 0, 1);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(MockSmartWallet.CallFailed.selector, inner));
        wallet.execute(address(usdc), 0, abi.encodeCall(usdc.transfer, (owner, 1)));
    }
}
