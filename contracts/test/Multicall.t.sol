// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "./Base.t.sol";
import {Multicall} from "../src/Multicall.sol";
import {MockSmartWallet} from "../src/MockSmartWallet.sol";
import {MockToken} from "../src/MockToken.sol";
import {MockUSDC} from "../src/MockUSDC.sol";
import {VMMarketplace} from "../src/VMMarketplace.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

contract MulticallTest is Base {
    Multicall internal multi;
    MockUSDC internal usdc;
    VMMarketplace internal market;
    MockSmartWallet internal alice;
    MockSmartWallet internal bob;

    address internal owner = address(0x0A11);
    address internal treasury = address(0x7EA5);
    uint256 internal constant PRICE = 2_500_000;

    function setUp() public {
        vm.warp(T0);
        multi = new Multicall();
        usdc = new MockUSDC();
        market = new VMMarketplace(address(usdc), treasury, owner);
        vm.prank(owner);
        market.setTier(0, PRICE, true, "Micro");
        // Two smart accounts whose calls the multicall bundles.
        alice = new MockSmartWallet(address(multi));
        bob = new MockSmartWallet(address(multi));
        usdc.mint(address(alice), 1_000e6);
        usdc.mint(address(bob), 1_000e6);
    }

    function _exec(MockSmartWallet wallet, address target, bytes memory data)
        internal
        pure
        returns (Multicall.Call memory)
    {
        return Multicall.Call(address(wallet), 0, abi.encodeCall(MockSmartWallet.execute, (target, 0, data)));
    }

    function testRunsCallsInOrderAndReturnsTheirResults() public {
        Multicall.Call[] memory calls = new Multicall.Call[](2);
        calls[0] = Multicall.Call(address(usdc), 0, abi.encodeCall(usdc.balanceOf, (address(alice))));
        calls[1] = Multicall.Call(address(market), 0, abi.encodeCall(market.nextTokenId, ()));
        bytes[] memory results = multi.aggregate(calls);
        assertEq(results.length, 2);
        assertEq(abi.decode(results[0], (uint256)), 1_000e6);
        assertEq(abi.decode(results[1], (uint256)), 1);
    }

    function testABundleBuysAVmAndDepositsForSeveralAccountsInOneTransaction() public {
        uint256 cost = PRICE * 3;
        Multicall.Call[] memory calls = new Multicall.Call[](5);
        calls[0] = _exec(alice, address(usdc), abi.encodeCall(usdc.transfer, (treasury, 7e6)));
        calls[1] = _exec(bob, address(usdc), abi.encodeCall(usdc.approve, (address(market), cost)));
        calls[2] = _exec(bob, address(market), abi.encodeCall(market.purchaseVM, (0, 3)));
        // A top-up of exactly the price, from the buyer, in the same batch.
        calls[3] = _exec(bob, address(usdc), abi.encodeCall(usdc.transfer, (treasury, cost)));
        calls[4] = _exec(alice, address(usdc), abi.encodeCall(usdc.transfer, (treasury, 1e6)));
        multi.aggregate(calls);
        assertEq(usdc.balanceOf(treasury), 7e6 + cost + cost + 1e6);
        assertEq(market.ownerOf(1), address(bob));
        assertEq(usdc.balanceOf(address(bob)), 1_000e6 - 2 * cost);
    }

    function testOneFailingCallRevertsTheWholeBundleWithItsIndex() public {
        Multicall.Call[] memory calls = new Multicall.Call[](2);
        calls[0] = _exec(alice, address(usdc), abi.encodeCall(usdc.transfer, (treasury, 1e6)));
        calls[1] = _exec(bob, address(usdc), abi.encodeCall(usdc.transfer, (treasury, 2_000e6)));
        bytes memory inner =
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, address(bob), 1_000e6, 2_000e6);
        bytes memory walletError = abi.encodeWithSelector(MockSmartWallet.CallFailed.selector, inner);
        vm.expectRevert(abi.encodeWithSelector(Multicall.CallFailed.selector, 1, walletError));
        multi.aggregate(calls);
        assertEq(usdc.balanceOf(treasury), 0);
    }

    function testForwardsValue() public {
        vm.deal(address(this), 1 ether);
        Multicall.Call[] memory calls = new Multicall.Call[](1);
        calls[0] = Multicall.Call(address(alice), 0.4 ether, "");
        multi.aggregate{value: 0.4 ether}(calls);
        assertEq(address(alice).balance, 0.4 ether);
    }

    function testATokenMayHaveAnEmptySymbol() public {
        MockToken t = new MockToken("", "", 18);
        assertEq(t.symbol(), "");
        assertEq(t.name(), "");
        assertEq(uint256(t.decimals()), 18);
        t.mint(address(this), 5);
        assertEq(t.balanceOf(address(this)), 5);
    }
}
