// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "./Base.t.sol";
import {MockUSDC} from "../src/MockUSDC.sol";
import {MockCbBTC} from "../src/MockCbBTC.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";

/// @dev A smart-contract wallet that accepts its owner's ECDSA signatures (ERC-1271).
contract Erc1271Wallet is IERC1271 {
    address public immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4) {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, signature);
        return err == ECDSA.RecoverError.NoError && recovered == owner ? this.isValidSignature.selector : bytes4(0);
    }
}

contract MockUSDCTest is Base {
    MockUSDC internal usdc;

    uint256 internal constant ALICE_KEY = 0xA11CE;
    uint256 internal constant MALLORY_KEY = 0xBAD;
    address internal alice;
    address internal bob = address(0xB0B);
    address internal relayer = address(0x4E1A);

    bytes32 internal constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    function setUp() public {
        vm.warp(T0);
        usdc = new MockUSDC();
        alice = vm.addr(ALICE_KEY);
        usdc.mint(alice, 1_000e6);
    }

    // ---- helpers ----

    function _digest(bytes32 structHash) internal view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", usdc.DOMAIN_SEPARATOR(), structHash));
    }

    struct Auth {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    struct Sig {
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    function _auth(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce)
        internal
        pure
        returns (Auth memory)
    {
        return Auth(from, to, value, validAfter, validBefore, nonce);
    }

    function _sign(uint256 key, bytes32 typeHash, Auth memory a) internal view returns (Sig memory sig) {
        bytes32 structHash =
            keccak256(abi.encode(typeHash, a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce));
        (sig.v, sig.r, sig.s) = vm.sign(key, _digest(structHash));
    }

    function _signTransfer(uint256 key, Auth memory a) internal view returns (Sig memory) {
        return _sign(key, usdc.TRANSFER_WITH_AUTHORIZATION_TYPEHASH(), a);
    }

    function _signReceive(uint256 key, Auth memory a) internal view returns (Sig memory) {
        return _sign(key, usdc.RECEIVE_WITH_AUTHORIZATION_TYPEHASH(), a);
    }

    function _transfer(Auth memory a, Sig memory sig) internal {
        usdc.transferWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, sig.v, sig.r, sig.s);
    }

    function _transferPacked(Auth memory a, Sig memory sig) internal {
        usdc.transferWithAuthorization(
            a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, abi.encodePacked(sig.r, sig.s, sig.v)
        );
    }

    function _receive(Auth memory a, Sig memory sig) internal {
        usdc.receiveWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, sig.v, sig.r, sig.s);
    }

    function _receivePacked(Auth memory a, Sig memory sig) internal {
        usdc.receiveWithAuthorization(
            a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, abi.encodePacked(sig.r, sig.s, sig.v)
        );
    }

    // ---- ERC-20 surface ----

    function testMetadata() public view {
        assertEq(usdc.name(), "USD Coin");
        assertEq(usdc.symbol(), "USDC");
        assertEq(uint256(usdc.decimals()), 6);
        assertEq(usdc.version(), "2");
    }

    function testAnyoneCanMint() public {
        vm.prank(bob);
        usdc.mint(bob, 5e6);
        assertEq(usdc.balanceOf(bob), 5e6);
        assertEq(usdc.totalSupply(), 1_005e6);
    }

    function testCbBTCMetadataAndMint() public {
        MockCbBTC cbbtc = new MockCbBTC();
        assertEq(cbbtc.name(), "Coinbase Wrapped BTC");
        assertEq(cbbtc.symbol(), "cbBTC");
        assertEq(uint256(cbbtc.decimals()), 8);
        vm.prank(bob);
        cbbtc.mint(alice, 1e8);
        assertEq(cbbtc.balanceOf(alice), 1e8);
    }

    // ---- EIP-712 domain and type hashes ----

    function testDomainSeparatorIsUsdCoinVersion2() public view {
        bytes32 expected = keccak256(
            abi.encode(EIP712_DOMAIN_TYPEHASH, keccak256("USD Coin"), keccak256("2"), block.chainid, address(usdc))
        );
        assertEq(usdc.DOMAIN_SEPARATOR(), expected);
        (, string memory name, string memory version, uint256 chainId, address verifying,,) = usdc.eip712Domain();
        assertEq(name, "USD Coin");
        assertEq(version, "2");
        assertEq(chainId, block.chainid);
        assertEq(verifying, address(usdc));
    }

    function testTypeHashesMatchFiatTokenV2() public view {
        assertEq(
            usdc.TRANSFER_WITH_AUTHORIZATION_TYPEHASH(),
            0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267
        );
        assertEq(
            usdc.RECEIVE_WITH_AUTHORIZATION_TYPEHASH(),
            0xd099cc98ef71107a616c4f0f941f04c322d8e254fe26b3c6668db87aae413de8
        );
        assertEq(
            usdc.CANCEL_AUTHORIZATION_TYPEHASH(), 0x158b0a9edf7a828aad02f63cd515c68ef2f50ba807396f6d12842833a1597429
        );
        assertEq(usdc.PERMIT_TYPEHASH(), 0x6e71edae12b1b97f4d1f60370fef10105fa2faae0126114a169c64845d6126c9);
    }

    // ---- EIP-2612 ----

    function testPermit() public {
        uint256 deadline = block.timestamp + 1 hours;
        assertEq(usdc.nonces(alice), 0);
        bytes32 structHash = keccak256(abi.encode(usdc.PERMIT_TYPEHASH(), alice, bob, 123e6, 0, deadline));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ALICE_KEY, _digest(structHash));
        vm.prank(relayer);
        usdc.permit(alice, bob, 123e6, deadline, v, r, s);
        assertEq(usdc.allowance(alice, bob), 123e6);
        assertEq(usdc.nonces(alice), 1);

        // The nonce moved on: the same signature no longer verifies.
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        usdc.permit(alice, bob, 123e6, deadline, v, r, s);

        vm.prank(bob);
        usdc.transferFrom(alice, bob, 100e6);
        assertEq(usdc.balanceOf(bob), 100e6);
    }

    function testPermitExpired() public {
        uint256 deadline = block.timestamp - 1;
        bytes32 structHash = keccak256(abi.encode(usdc.PERMIT_TYPEHASH(), alice, bob, 1, 0, deadline));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ALICE_KEY, _digest(structHash));
        vm.expectRevert(bytes("FiatTokenV2: permit is expired"));
        usdc.permit(alice, bob, 1, deadline, v, r, s);
    }

    function testPermitWrongSigner() public {
        uint256 deadline = block.timestamp + 1;
        bytes32 structHash = keccak256(abi.encode(usdc.PERMIT_TYPEHASH(), alice, bob, 1, 0, deadline));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(MALLORY_KEY, _digest(structHash));
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        usdc.permit(alice, bob, 1, deadline, v, r, s);
    }

    // ---- EIP-3009 transferWithAuthorization ----

    function testTransferWithAuthorization() public {
        Auth memory a = _auth(alice, bob, 25e6, 0, block.timestamp + 1 hours, keccak256("n1"));
        Sig memory sig = _signTransfer(ALICE_KEY, a);
        assertFalse(usdc.authorizationState(alice, a.nonce), "fresh nonce");

        vm.expectEmit(true, true, false, true, address(usdc));
        emit MockUSDC.AuthorizationUsed(alice, a.nonce);
        vm.expectEmit(true, true, false, true, address(usdc));
        emit IERC20.Transfer(alice, bob, 25e6);
        vm.prank(relayer);
        _transfer(a, sig);

        assertEq(usdc.balanceOf(bob), 25e6);
        assertEq(usdc.balanceOf(alice), 975e6);
        assertTrue(usdc.authorizationState(alice, a.nonce), "nonce used");
    }

    function testTransferWithAuthorizationReplayFails() public {
        Auth memory a = _auth(alice, bob, 25e6, 0, block.timestamp + 1 hours, keccak256("n1"));
        Sig memory sig = _signTransfer(ALICE_KEY, a);
        _transfer(a, sig);
        vm.expectRevert(bytes("FiatTokenV2: authorization is used or canceled"));
        _transfer(a, sig);
        assertEq(usdc.balanceOf(bob), 25e6);
    }

    function testTransferWithAuthorizationNotYetValid() public {
        uint256 validAfter = block.timestamp + 10;
        Auth memory a = _auth(alice, bob, 1e6, validAfter, block.timestamp + 1 hours, keccak256("n1"));
        Sig memory sig = _signTransfer(ALICE_KEY, a);
        vm.expectRevert(bytes("FiatTokenV2: authorization is not yet valid"));
        _transfer(a, sig);
        // validAfter is exclusive: still not valid at exactly validAfter.
        vm.warp(validAfter);
        vm.expectRevert(bytes("FiatTokenV2: authorization is not yet valid"));
        _transfer(a, sig);
        vm.warp(validAfter + 1);
        _transfer(a, sig);
        assertEq(usdc.balanceOf(bob), 1e6);
    }

    function testTransferWithAuthorizationExpired() public {
        Auth memory a = _auth(alice, bob, 1e6, 0, block.timestamp + 60, keccak256("n1"));
        Sig memory sig = _signTransfer(ALICE_KEY, a);
        // validBefore is exclusive.
        vm.warp(a.validBefore);
        vm.expectRevert(bytes("FiatTokenV2: authorization is expired"));
        _transfer(a, sig);
    }

    function testTransferWithAuthorizationWrongSigner() public {
        // Mallory signs an authorization that claims to move Alice's funds.
        Auth memory a = _auth(alice, bob, 1e6, 0, block.timestamp + 60, keccak256("n1"));
        Sig memory sig = _signTransfer(MALLORY_KEY, a);
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        _transfer(a, sig);
    }

    function testTransferWithAuthorizationTamperedFields() public {
        Auth memory a = _auth(alice, bob, 1e6, 0, block.timestamp + 60, keccak256("n1"));
        Sig memory sig = _signTransfer(ALICE_KEY, a);
        a.value = 2e6;
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        _transfer(a, sig);
        a.value = 1e6;
        a.to = relayer;
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        _transfer(a, sig);
        a.to = bob;
        a.validBefore += 1;
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        _transfer(a, sig);
    }

    function testTransferWithAuthorizationNeedsBalance() public {
        Auth memory a = _auth(alice, bob, 2_000e6, 0, block.timestamp + 60, keccak256("n1"));
        Sig memory sig = _signTransfer(ALICE_KEY, a);
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, alice, 1_000e6, 2_000e6));
        _transfer(a, sig);
        assertFalse(usdc.authorizationState(alice, a.nonce), "a failed transfer does not use the nonce");
    }

    function testTransferWithAuthorizationPackedSignature() public {
        Auth memory a = _auth(alice, bob, 3e6, 0, block.timestamp + 60, keccak256("packed"));
        Sig memory sig = _signTransfer(ALICE_KEY, a);
        _transferPacked(a, sig);
        assertEq(usdc.balanceOf(bob), 3e6);
        vm.expectRevert(bytes("FiatTokenV2: authorization is used or canceled"));
        _transfer(a, sig);
    }

    function testTransferWithAuthorizationFromErc1271Wallet() public {
        Erc1271Wallet wallet = new Erc1271Wallet(alice);
        usdc.mint(address(wallet), 10e6);
        Auth memory a = _auth(address(wallet), bob, 4e6, 0, block.timestamp + 60, keccak256("wallet"));
        _transferPacked(a, _signTransfer(ALICE_KEY, a));
        assertEq(usdc.balanceOf(bob), 4e6);

        // The wallet rejects anyone else's signature.
        a.nonce = keccak256("wallet2");
        Sig memory sig = _signTransfer(MALLORY_KEY, a);
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        _transfer(a, sig);
    }

    // ---- EIP-3009 receiveWithAuthorization ----

    function testReceiveWithAuthorization() public {
        Auth memory a = _auth(alice, bob, 7e6, 0, block.timestamp + 60, keccak256("r1"));
        Sig memory sig = _signReceive(ALICE_KEY, a);
        vm.expectEmit(true, true, false, true, address(usdc));
        emit MockUSDC.AuthorizationUsed(alice, a.nonce);
        vm.prank(bob);
        _receive(a, sig);
        assertEq(usdc.balanceOf(bob), 7e6);
        assertTrue(usdc.authorizationState(alice, a.nonce), "nonce used");
    }

    function testReceiveWithAuthorizationCallerMustBePayee() public {
        Auth memory a = _auth(alice, bob, 7e6, 0, block.timestamp + 60, keccak256("r1"));
        Sig memory sig = _signReceive(ALICE_KEY, a);
        vm.prank(relayer);
        vm.expectRevert(bytes("FiatTokenV2: caller must be the payee"));
        _receive(a, sig);
        vm.prank(relayer);
        vm.expectRevert(bytes("FiatTokenV2: caller must be the payee"));
        _receivePacked(a, sig);
        assertEq(usdc.balanceOf(bob), 0);
    }

    function testReceiveAuthorizationIsNotATransferAuthorization() public {
        Auth memory a = _auth(alice, bob, 7e6, 0, block.timestamp + 60, keccak256("r1"));
        // Signed as ReceiveWithAuthorization: transferWithAuthorization must not accept it.
        Sig memory sig = _signReceive(ALICE_KEY, a);
        vm.prank(relayer);
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        _transfer(a, sig);
        // Nor the other way round.
        sig = _signTransfer(ALICE_KEY, a);
        vm.prank(bob);
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        _receive(a, sig);
    }

    function testReceiveWithAuthorizationChecksWindowAndSigner() public {
        Auth memory a = _auth(alice, bob, 7e6, block.timestamp, block.timestamp + 60, keccak256("r3"));
        Sig memory sig = _signReceive(ALICE_KEY, a);
        vm.prank(bob);
        vm.expectRevert(bytes("FiatTokenV2: authorization is not yet valid"));
        _receive(a, sig);
        vm.warp(a.validBefore);
        vm.prank(bob);
        vm.expectRevert(bytes("FiatTokenV2: authorization is expired"));
        _receive(a, sig);
        vm.warp(a.validAfter + 1);
        sig = _signReceive(MALLORY_KEY, a);
        vm.prank(bob);
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        _receive(a, sig);
    }

    function testReceiveWithAuthorizationPackedSignatureAndReplay() public {
        Auth memory a = _auth(alice, bob, 7e6, 0, block.timestamp + 60, keccak256("r2"));
        Sig memory sig = _signReceive(ALICE_KEY, a);
        vm.startPrank(bob);
        _receivePacked(a, sig);
        vm.expectRevert(bytes("FiatTokenV2: authorization is used or canceled"));
        _receive(a, sig);
        vm.stopPrank();
        assertEq(usdc.balanceOf(bob), 7e6);
    }

    // ---- EIP-3009 cancelAuthorization ----

    function _signCancel(uint256 key, address authorizer, bytes32 nonce) internal view returns (Sig memory sig) {
        bytes32 structHash = keccak256(abi.encode(usdc.CANCEL_AUTHORIZATION_TYPEHASH(), authorizer, nonce));
        (sig.v, sig.r, sig.s) = vm.sign(key, _digest(structHash));
    }

    function testCancelAuthorization() public {
        Auth memory a = _auth(alice, bob, 1e6, 0, block.timestamp + 60, keccak256("c1"));
        Sig memory transferSig = _signTransfer(ALICE_KEY, a);
        Sig memory c = _signCancel(ALICE_KEY, alice, a.nonce);

        vm.expectEmit(true, true, false, true, address(usdc));
        emit MockUSDC.AuthorizationCanceled(alice, a.nonce);
        vm.prank(relayer);
        usdc.cancelAuthorization(alice, a.nonce, c.v, c.r, c.s);
        assertTrue(usdc.authorizationState(alice, a.nonce), "canceled nonce is spent");

        vm.expectRevert(bytes("FiatTokenV2: authorization is used or canceled"));
        _transfer(a, transferSig);
        vm.expectRevert(bytes("FiatTokenV2: authorization is used or canceled"));
        usdc.cancelAuthorization(alice, a.nonce, c.v, c.r, c.s);
        assertEq(usdc.balanceOf(bob), 0);
    }

    function testCancelAuthorizationWrongSigner() public {
        bytes32 nonce = keccak256("c1");
        Sig memory c = _signCancel(MALLORY_KEY, alice, nonce);
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        usdc.cancelAuthorization(alice, nonce, c.v, c.r, c.s);
        assertFalse(usdc.authorizationState(alice, nonce), "still usable");
    }

    function testCancelAfterUseFails() public {
        Auth memory a = _auth(alice, bob, 1e6, 0, block.timestamp + 60, keccak256("c2"));
        _transfer(a, _signTransfer(ALICE_KEY, a));
        Sig memory c = _signCancel(ALICE_KEY, alice, a.nonce);
        vm.expectRevert(bytes("FiatTokenV2: authorization is used or canceled"));
        usdc.cancelAuthorization(alice, a.nonce, c.v, c.r, c.s);
    }

    function testFuzz_TransferWithAuthorization(uint256 value, bytes32 nonce, uint256 key) public {
        key = bound(key, 1, 1e30);
        address from = vm.addr(key);
        vm.assume(from != bob);
        value = bound(value, 0, 1e30);
        usdc.mint(from, value);
        Auth memory a = _auth(from, bob, value, 0, block.timestamp + 1, nonce);
        _transfer(a, _signTransfer(key, a));
        assertEq(usdc.balanceOf(bob), value);
        assertTrue(usdc.authorizationState(from, nonce), "nonce used");
    }
}
