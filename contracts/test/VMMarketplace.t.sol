// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "./Base.t.sol";
import {MockUSDC} from "../src/MockUSDC.sol";
import {VMMarketplace} from "../src/VMMarketplace.sol";
import {IERC20Errors, IERC721Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {IERC721} from "@openzeppelin/contracts/token/ERC721/IERC721.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

contract VMMarketplaceTest is Base {
    MockUSDC internal usdc;
    VMMarketplace internal market;

    address internal owner = address(0x0A11);
    address internal treasury = address(0x7EA5);
    address internal alice = address(0xA11CE);
    address internal bob = address(0xB0B);
    address internal relayer = address(0x4E1A);

    uint256 internal constant BUYER_KEY = 0xB1;
    address internal signer;

    uint256 internal constant PRICE = 2_500_000; // 2.50 USDC a day

    function setUp() public {
        vm.warp(T0);
        usdc = new MockUSDC();
        market = new VMMarketplace(address(usdc), treasury, owner);
        vm.prank(owner);
        market.setTier(0, PRICE, true, "Micro");
        vm.prank(owner);
        market.setTier(3, 10_000_000, true, "Large");
        signer = vm.addr(BUYER_KEY);
        for (uint256 i = 0; i < 3; i++) {
            address who = [alice, bob, signer][i];
            usdc.mint(who, 100_000e6);
            vm.prank(who);
            usdc.approve(address(market), type(uint256).max);
        }
    }

    // ---- deployment ----

    function testDeployment() public view {
        assertEq(market.name(), "ClawCloud VM");
        assertEq(market.symbol(), "CLAWVM");
        assertEq(market.owner(), owner);
        assertEq(market.treasury(), treasury);
        assertEq(address(market.usdc()), address(usdc));
        assertEq(market.nextTokenId(), 1);
        assertEq(uint256(market.MAX_TIER()), 7);
        assertEq(market.MAX_DURATION_DAYS(), 3650);
        assertFalse(market.paused(), "not paused");
    }

    function testConstructorRejectsZeroAddresses() public {
        vm.expectRevert(VMMarketplace.ZeroAddress.selector);
        new VMMarketplace(address(0), treasury, owner);
        vm.expectRevert(VMMarketplace.ZeroAddress.selector);
        new VMMarketplace(address(usdc), address(0), owner);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new VMMarketplace(address(usdc), treasury, address(0));
    }

    // ---- tiers ----

    function testSetTierEmitsAndStores() public {
        vm.expectEmit(true, false, false, true, address(market));
        emit VMMarketplace.TierUpdated(5, 42, true, "XL");
        vm.prank(owner);
        market.setTier(5, 42, true, "XL");
        (uint256 price, bool active, string memory name) = market.getTierConfig(5);
        assertEq(price, 42);
        assertTrue(active);
        assertEq(name, "XL");

        // Updating replaces everything.
        vm.expectEmit(true, false, false, true, address(market));
        emit VMMarketplace.TierUpdated(5, 50, false, "XL2");
        vm.prank(owner);
        market.setTier(5, 50, false, "XL2");
        (price, active, name) = market.getTierConfig(5);
        assertEq(price, 50);
        assertFalse(active, "deactivated");
        assertEq(name, "XL2");
    }

    function testUnconfiguredTierIsInactive() public {
        (uint256 price, bool active, string memory name) = market.getTierConfig(7);
        assertEq(price, 0);
        assertFalse(active, "never configured");
        assertEq(name, "");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.InactiveTier.selector, uint8(7)));
        market.purchaseVM(7, 1);
    }

    function testSetTierOnlyOwner() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        market.setTier(1, 1, true, "x");
    }

    function testUnknownTier() public {
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.UnknownTier.selector, uint8(8)));
        market.getTierConfig(8);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.UnknownTier.selector, uint8(8)));
        market.setTier(8, 1, true, "x");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.UnknownTier.selector, uint8(255)));
        market.purchaseVM(255, 1);
    }

    function testInactiveTierRejectsPurchase() public {
        vm.prank(owner);
        market.setTier(0, PRICE, false, "Micro");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.InactiveTier.selector, uint8(0)));
        market.purchaseVM(0, 1);
    }

    // ---- purchaseVM ----

    function testPurchaseVM() public {
        uint256 cost = PRICE * 30;
        vm.expectEmit(true, true, true, true, address(market));
        emit IERC721.Transfer(address(0), alice, 1);
        vm.expectEmit(true, true, false, true, address(market));
        emit VMMarketplace.VMPurchased(1, alice, 0, 30, T0, cost);
        vm.prank(alice);
        uint256 tokenId = market.purchaseVM(0, 30);

        assertEq(tokenId, 1);
        assertEq(market.nextTokenId(), 2);
        assertEq(market.ownerOf(1), alice);
        assertEq(market.balanceOf(alice), 1);
        assertEq(usdc.balanceOf(treasury), cost, "paid straight to the treasury");
        assertEq(usdc.balanceOf(address(market)), 0, "marketplace holds nothing");
        assertEq(usdc.balanceOf(alice), 100_000e6 - cost);
        (uint8 tier, uint64 purchaseDate, uint64 expiresAt) = market.vmInfo(1);
        assertEq(uint256(tier), 0);
        assertEq(uint256(purchaseDate), T0);
        assertEq(uint256(expiresAt), T0 + 30 * DAY);
        assertTrue(market.isTokenValid(1), "valid");

        vm.prank(bob);
        assertEq(market.purchaseVM(3, 1), 2, "ids count up");
        assertEq(market.ownerOf(2), bob);
    }

    function testPurchaseNeedsAllowanceAndBalance() public {
        address poor = address(0xDEAD01);
        vm.prank(poor);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, PRICE)
        );
        market.purchaseVM(0, 1);
        vm.prank(poor);
        usdc.approve(address(market), PRICE);
        vm.prank(poor);
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, poor, 0, PRICE));
        market.purchaseVM(0, 1);
    }

    function testPurchaseZeroDuration() public {
        vm.prank(alice);
        vm.expectRevert(VMMarketplace.ZeroDuration.selector);
        market.purchaseVM(0, 0);
    }

    function testPurchaseDurationCap() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.DurationTooLong.selector, uint256(3651)));
        market.purchaseVM(0, 3651);
        vm.prank(alice);
        market.purchaseVM(0, 3650);
        (,, uint64 expiresAt) = market.vmInfo(1);
        assertEq(uint256(expiresAt), T0 + 3650 * DAY);
    }

    function testFuzz_PurchaseCost(uint16 daysRaw, uint256 price) public {
        uint16 durationDays = uint16(bound(daysRaw, 1, 3650));
        price = bound(price, 0, 1e12);
        vm.prank(owner);
        market.setTier(2, price, true, "fuzz");
        usdc.mint(alice, price * durationDays);
        uint256 before = usdc.balanceOf(alice);
        vm.prank(alice);
        uint256 id = market.purchaseVM(2, durationDays);
        assertEq(before - usdc.balanceOf(alice), price * durationDays);
        assertEq(usdc.balanceOf(treasury), price * durationDays);
        (,, uint64 expiresAt) = market.vmInfo(id);
        assertEq(uint256(expiresAt), T0 + uint256(durationDays) * DAY);
    }

    // ---- purchaseVMWithAuthorization (EIP-3009 via a relayer) ----

    struct Sig {
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    function _signReceive(uint256 key, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce)
        internal
        view
        returns (Sig memory sig)
    {
        bytes32 structHash = keccak256(
            abi.encode(
                usdc.RECEIVE_WITH_AUTHORIZATION_TYPEHASH(),
                vm.addr(key),
                address(market),
                value,
                validAfter,
                validBefore,
                nonce
            )
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", usdc.DOMAIN_SEPARATOR(), structHash));
        (sig.v, sig.r, sig.s) = vm.sign(key, digest);
    }

    function testPurchaseWithAuthorizationViaRelayer() public {
        uint256 cost = 10_000_000 * 7;
        uint256 validBefore = block.timestamp + 300;
        bytes32 nonce = keccak256("buy-1");
        Sig memory sig = _signReceive(BUYER_KEY, cost, 0, validBefore, nonce);
        // The buyer granted no allowance for this path.
        vm.prank(signer);
        usdc.approve(address(market), 0);
        uint256 relayerBefore = usdc.balanceOf(relayer);

        vm.expectEmit(true, true, false, true, address(market));
        emit VMMarketplace.VMPurchased(1, signer, 3, 7, T0, cost);
        vm.prank(relayer);
        uint256 tokenId = market.purchaseVMWithAuthorization(signer, 3, 7, 0, validBefore, nonce, sig.v, sig.r, sig.s);

        assertEq(tokenId, 1);
        assertEq(market.ownerOf(1), signer, "minted to the buyer, not the relayer");
        assertEq(usdc.balanceOf(treasury), cost);
        assertEq(usdc.balanceOf(address(market)), 0, "forwarded to the treasury");
        assertEq(usdc.balanceOf(signer), 100_000e6 - cost);
        assertEq(usdc.balanceOf(relayer), relayerBefore);
        assertTrue(usdc.authorizationState(signer, nonce), "authorization used");
        (uint8 tier,, uint64 expiresAt) = market.vmInfo(1);
        assertEq(uint256(tier), 3);
        assertEq(uint256(expiresAt), T0 + 7 * DAY);

        // The same authorization cannot buy twice.
        vm.prank(relayer);
        vm.expectRevert(bytes("FiatTokenV2: authorization is used or canceled"));
        market.purchaseVMWithAuthorization(signer, 3, 7, 0, validBefore, nonce, sig.v, sig.r, sig.s);
    }

    function testPurchaseWithAuthorizationWrongAmount() public {
        uint256 validBefore = block.timestamp + 300;
        bytes32 nonce = keccak256("buy-2");
        // Signed for one day, used for two: the amount differs, so the signature does not verify.
        Sig memory sig = _signReceive(BUYER_KEY, PRICE, 0, validBefore, nonce);
        vm.prank(relayer);
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        market.purchaseVMWithAuthorization(signer, 0, 2, 0, validBefore, nonce, sig.v, sig.r, sig.s);
        // Signed by the buyer but claimed for someone else.
        vm.prank(relayer);
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        market.purchaseVMWithAuthorization(alice, 0, 1, 0, validBefore, nonce, sig.v, sig.r, sig.s);
        assertEq(market.nextTokenId(), 1, "nothing minted");
    }

    function testPurchaseWithAuthorizationExpiredAndEarly() public {
        bytes32 nonce = keccak256("buy-3");
        Sig memory sig = _signReceive(BUYER_KEY, PRICE, T0 + 10, T0 + 100, nonce);
        vm.expectRevert(bytes("FiatTokenV2: authorization is not yet valid"));
        market.purchaseVMWithAuthorization(signer, 0, 1, T0 + 10, T0 + 100, nonce, sig.v, sig.r, sig.s);
        vm.warp(T0 + 100);
        vm.expectRevert(bytes("FiatTokenV2: authorization is expired"));
        market.purchaseVMWithAuthorization(signer, 0, 1, T0 + 10, T0 + 100, nonce, sig.v, sig.r, sig.s);
        vm.warp(T0 + 50);
        market.purchaseVMWithAuthorization(signer, 0, 1, T0 + 10, T0 + 100, nonce, sig.v, sig.r, sig.s);
        assertEq(market.ownerOf(1), signer);
    }

    function testPurchaseWithAuthorizationChecksTierAndBuyer() public {
        Sig memory sig = _signReceive(BUYER_KEY, PRICE, 0, T0 + 100, bytes32(0));
        vm.expectRevert(VMMarketplace.ZeroAddress.selector);
        market.purchaseVMWithAuthorization(address(0), 0, 1, 0, T0 + 100, bytes32(0), sig.v, sig.r, sig.s);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.InactiveTier.selector, uint8(4)));
        market.purchaseVMWithAuthorization(signer, 4, 1, 0, T0 + 100, bytes32(0), sig.v, sig.r, sig.s);
        vm.expectRevert(VMMarketplace.ZeroDuration.selector);
        market.purchaseVMWithAuthorization(signer, 0, 0, 0, T0 + 100, bytes32(0), sig.v, sig.r, sig.s);
        vm.prank(owner);
        market.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        market.purchaseVMWithAuthorization(signer, 0, 1, 0, T0 + 100, bytes32(0), sig.v, sig.r, sig.s);
    }

    // ---- expiry ----

    function testExpiryFlipsValidity() public {
        vm.prank(alice);
        market.purchaseVM(0, 2);
        vm.warp(T0 + 2 * DAY - 1);
        assertTrue(market.isTokenValid(1), "valid until the last second");
        vm.warp(T0 + 2 * DAY);
        assertFalse(market.isTokenValid(1), "expired at expiresAt");
        assertEq(market.ownerOf(1), alice, "still owned after expiry");
    }

    function testNonexistentVM() public {
        assertFalse(market.isTokenValid(0), "id 0 never exists");
        assertFalse(market.isTokenValid(1), "not minted yet");
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.NonexistentVM.selector, uint256(1)));
        market.vmInfo(1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.NonexistentVM.selector, uint256(9)));
        market.extendVM(9, 1);
    }

    // ---- extendVM ----

    function testExtendActiveVM() public {
        vm.prank(alice);
        market.purchaseVM(0, 10);
        vm.warp(T0 + 3 * DAY);
        uint256 treasuryBefore = usdc.balanceOf(treasury);
        uint256 newExpiry = T0 + 15 * DAY; // from the current expiry, not from now
        // Anyone may pay for someone else's VM.
        vm.expectEmit(true, true, false, true, address(market));
        emit VMMarketplace.VMExtended(1, bob, 5, newExpiry, PRICE * 5);
        vm.prank(bob);
        market.extendVM(1, 5);
        (uint8 tier, uint64 purchaseDate, uint64 expiresAt) = market.vmInfo(1);
        assertEq(uint256(tier), 0);
        assertEq(uint256(purchaseDate), T0, "purchase date unchanged");
        assertEq(uint256(expiresAt), newExpiry);
        assertEq(usdc.balanceOf(treasury) - treasuryBefore, PRICE * 5);
        assertEq(market.ownerOf(1), alice, "the payer does not get the VM");
    }

    function testExtendExpiredVMStartsFromNow() public {
        vm.prank(alice);
        market.purchaseVM(0, 1);
        vm.warp(T0 + 10 * DAY);
        assertFalse(market.isTokenValid(1), "expired");
        vm.prank(alice);
        market.extendVM(1, 2);
        (,, uint64 expiresAt) = market.vmInfo(1);
        assertEq(uint256(expiresAt), T0 + 12 * DAY);
        assertTrue(market.isTokenValid(1), "valid again");
    }

    function testExtendUsesCurrentPrice() public {
        vm.prank(alice);
        market.purchaseVM(0, 1);
        vm.prank(owner);
        market.setTier(0, PRICE * 3, true, "Micro");
        uint256 before = usdc.balanceOf(alice);
        vm.expectEmit(true, true, false, true, address(market));
        emit VMMarketplace.VMExtended(1, alice, 2, T0 + 3 * DAY, PRICE * 6);
        vm.prank(alice);
        market.extendVM(1, 2);
        assertEq(before - usdc.balanceOf(alice), PRICE * 6);
    }

    function testExtendRejections() public {
        vm.prank(alice);
        market.purchaseVM(0, 100);
        vm.prank(alice);
        vm.expectRevert(VMMarketplace.ZeroDuration.selector);
        market.extendVM(1, 0);

        // 100 days left + 3551 would be 3651 days of remaining lifetime.
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.DurationTooLong.selector, uint256(3651)));
        market.extendVM(1, 3551);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.DurationTooLong.selector, uint256(4000)));
        market.extendVM(1, 4000);
        vm.prank(alice);
        market.extendVM(1, 3550);
        (,, uint64 expiresAt) = market.vmInfo(1);
        assertEq(uint256(expiresAt), T0 + 3650 * DAY);

        vm.prank(owner);
        market.setTier(0, PRICE, false, "Micro");
        vm.warp(T0 + 3650 * DAY);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(VMMarketplace.InactiveTier.selector, uint8(0)));
        market.extendVM(1, 1);
    }

    // ---- admin: pause, treasury ----

    function testPause() public {
        vm.prank(alice);
        market.purchaseVM(0, 1);

        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        market.pause();

        vm.expectEmit(false, false, false, true, address(market));
        emit Pausable.Paused(owner);
        vm.prank(owner);
        market.pause();
        assertTrue(market.paused(), "paused");

        vm.prank(alice);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        market.purchaseVM(0, 1);
        vm.prank(alice);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        market.extendVM(1, 1);

        // Owned VMs keep working and can still change hands while paused.
        assertTrue(market.isTokenValid(1), "still valid");
        vm.prank(alice);
        market.transferFrom(alice, bob, 1);
        assertEq(market.ownerOf(1), bob);

        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        market.unpause();
        vm.prank(owner);
        market.unpause();
        vm.prank(alice);
        assertEq(market.purchaseVM(0, 1), 2);
    }

    function testSetTreasury() public {
        address newTreasury = address(0x7EA6);
        vm.expectEmit(true, false, false, true, address(market));
        emit VMMarketplace.TreasuryUpdated(newTreasury);
        vm.prank(owner);
        market.setTreasury(newTreasury);
        assertEq(market.treasury(), newTreasury);

        vm.prank(alice);
        market.purchaseVM(0, 4);
        assertEq(usdc.balanceOf(newTreasury), PRICE * 4);
        assertEq(usdc.balanceOf(treasury), 0);

        vm.prank(owner);
        vm.expectRevert(VMMarketplace.ZeroAddress.selector);
        market.setTreasury(address(0));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        market.setTreasury(alice);
    }

    // ---- ERC-721 transfers ----

    function testTransferVM() public {
        vm.prank(alice);
        market.purchaseVM(0, 5);
        vm.expectEmit(true, true, true, true, address(market));
        emit IERC721.Transfer(alice, bob, 1);
        vm.prank(alice);
        market.transferFrom(alice, bob, 1);
        assertEq(market.ownerOf(1), bob, "new owner");
        assertEq(market.balanceOf(alice), 0, "old owner holds nothing");
        assertEq(market.balanceOf(bob), 1);
        assertTrue(market.isTokenValid(1), "validity travels with the token");

        // The old owner can no longer move it.
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721InsufficientApproval.selector, alice, 1));
        market.transferFrom(bob, alice, 1);

        // Approved operators work as usual.
        vm.prank(bob);
        market.approve(relayer, 1);
        vm.prank(relayer);
        market.safeTransferFrom(bob, alice, 1);
        assertEq(market.ownerOf(1), alice);
    }
}
