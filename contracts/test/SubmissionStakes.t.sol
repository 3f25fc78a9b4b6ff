// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "./Base.t.sol";
import {MockCbBTC} from "../src/MockCbBTC.sol";
import {MockUSDC} from "../src/MockUSDC.sol";
import {SubmissionStakes} from "../src/SubmissionStakes.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @dev Submits with too much ETH and, when refunded, tries to re-enter.
contract ReentrantSubmitter {
    SubmissionStakes internal immutable stakes;
    bytes16 internal marketId;

    constructor(SubmissionStakes stakes_) {
        stakes = stakes_;
    }

    function go(bytes16 marketId_, uint256 stake) external payable {
        marketId = marketId_;
        stakes.submit{value: msg.value}(
            marketId_, SubmissionStakes.SubmissionType.Competitor, "again", address(0), stake
        );
    }

    receive() external payable {
        stakes.submit{value: 0}(marketId, SubmissionStakes.SubmissionType.Competitor, "re-entered", address(0), 1);
    }
}

contract SubmissionStakesTest is Base {
    SubmissionStakes internal stakes;
    MockCbBTC internal cbbtc;
    MockUSDC internal usdc;

    address internal owner = address(0x0A11);
    address internal treasury = address(0x7EA5);
    address internal operator = address(0x0BE7);
    address internal oracle = address(0x0AC1);
    address internal oracle2 = address(0x0AC2);
    address internal alice = address(0xA11CE);
    address internal bob = address(0xB0B);
    address internal carol = address(0xCA201);

    bytes16 internal constant MARKET = bytes16(0x8b0f3c523c5e4c559c1e6b7a1f2d9e01);
    bytes16 internal constant MARKET2 = bytes16(0x11111111222233334444555555555555);

    SubmissionStakes.SubmissionType internal constant ORIGINAL = SubmissionStakes.SubmissionType.Original;
    SubmissionStakes.SubmissionType internal constant COMPETITOR = SubmissionStakes.SubmissionType.Competitor;
    SubmissionStakes.SubmissionType internal constant NULL = SubmissionStakes.SubmissionType.Null;

    uint64 internal constant START = uint64(T0);
    uint64 internal constant END = uint64(T0 + 7 days);

    function setUp() public {
        vm.warp(T0);
        stakes = new SubmissionStakes(owner, treasury, 700);
        cbbtc = new MockCbBTC();
        usdc = new MockUSDC();
        vm.startPrank(owner);
        stakes.setOperator(operator, true);
        stakes.setStakeToken(address(cbbtc), true);
        vm.stopPrank();
        _createMarket(MARKET, START, END);
        address[3] memory people = [alice, bob, carol];
        for (uint256 i = 0; i < people.length; i++) {
            vm.deal(people[i], 100 ether);
            cbbtc.mint(people[i], 10e8);
            vm.prank(people[i]);
            cbbtc.approve(address(stakes), type(uint256).max);
        }
    }

    // ---- helpers ----

    function _oracles() internal view returns (address[] memory list) {
        list = new address[](2);
        list[0] = oracle;
        list[1] = oracle2;
    }

    function _createMarket(bytes16 id, uint64 start, uint64 end) internal {
        vm.prank(operator);
        stakes.createMarket(id, start, end, _oracles(), '{"actor":{"id":"a1","name":"Demo Actor"}}');
    }

    /// @dev Submits with ETH paying exactly stake + fee.
    function _submitEth(address who, bytes16 id, SubmissionStakes.SubmissionType t, string memory text, uint256 stake)
        internal
        returns (uint256)
    {
        uint256 total = stake + stakes.feeFor(stake);
        vm.prank(who);
        return stakes.submit{value: total}(id, t, text, address(0), stake);
    }

    function _submitBtc(address who, bytes16 id, SubmissionStakes.SubmissionType t, string memory text, uint256 stake)
        internal
        returns (uint256)
    {
        vm.prank(who);
        return stakes.submit(id, t, text, address(cbbtc), stake);
    }

    function _text(uint256 length) internal pure returns (string memory) {
        bytes memory b = new bytes(length);
        for (uint256 i = 0; i < length; i++) {
            b[i] = "a";
        }
        return string(b);
    }

    // ---- deployment and admin ----

    function testDeployment() public view {
        assertEq(stakes.owner(), owner);
        assertEq(stakes.treasury(), treasury);
        assertEq(uint256(stakes.feeBps()), 700);
        assertEq(stakes.FEE_DENOMINATOR(), 10_000);
        assertEq(stakes.nextSubmissionId(), 1);
        assertTrue(stakes.isOperator(operator), "operator set");
        assertFalse(stakes.isOperator(alice), "alice is no operator");
        assertTrue(stakes.isStakeTokenAllowed(address(0)), "ETH always allowed");
        assertTrue(stakes.isStakeTokenAllowed(address(cbbtc)), "cbBTC allowed");
        assertFalse(stakes.isStakeTokenAllowed(address(usdc)), "USDC not allowed yet");
    }

    function testConstructorChecks() public {
        vm.expectRevert(SubmissionStakes.ZeroAddress.selector);
        new SubmissionStakes(owner, address(0), 700);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.InvalidFee.selector, uint16(10_001)));
        new SubmissionStakes(owner, treasury, 10_001);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new SubmissionStakes(address(0), treasury, 700);
        SubmissionStakes full = new SubmissionStakes(owner, treasury, 10_000);
        assertEq(uint256(full.feeBps()), 10_000);
    }

    function testSetOperator() public {
        vm.expectEmit(true, false, false, true, address(stakes));
        emit SubmissionStakes.OperatorUpdated(alice, true);
        vm.prank(owner);
        stakes.setOperator(alice, true);
        assertTrue(stakes.isOperator(alice), "enabled");
        vm.expectEmit(true, false, false, true, address(stakes));
        emit SubmissionStakes.OperatorUpdated(alice, false);
        vm.prank(owner);
        stakes.setOperator(alice, false);
        assertFalse(stakes.isOperator(alice), "disabled");

        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, operator));
        stakes.setOperator(alice, true);
    }

    function testSetStakeToken() public {
        vm.expectEmit(true, false, false, true, address(stakes));
        emit SubmissionStakes.StakeTokenUpdated(address(usdc), true);
        vm.prank(owner);
        stakes.setStakeToken(address(usdc), true);
        assertTrue(stakes.isStakeTokenAllowed(address(usdc)), "allowed");
        vm.prank(owner);
        stakes.setStakeToken(address(usdc), false);
        assertFalse(stakes.isStakeTokenAllowed(address(usdc)), "disallowed");

        vm.prank(owner);
        vm.expectRevert(SubmissionStakes.ZeroAddress.selector);
        stakes.setStakeToken(address(0), false);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        stakes.setStakeToken(address(usdc), true);
    }

    function testSetFeeBps() public {
        vm.expectEmit(false, false, false, true, address(stakes));
        emit SubmissionStakes.FeeUpdated(250);
        vm.prank(owner);
        stakes.setFeeBps(250);
        assertEq(uint256(stakes.feeBps()), 250);
        assertEq(stakes.feeFor(1000), 25);

        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.InvalidFee.selector, uint16(10_001)));
        stakes.setFeeBps(10_001);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        stakes.setFeeBps(1);
    }

    function testSetTreasury() public {
        address newTreasury = address(0x7EA6);
        vm.expectEmit(true, false, false, true, address(stakes));
        emit SubmissionStakes.TreasuryUpdated(newTreasury);
        vm.prank(owner);
        stakes.setTreasury(newTreasury);
        assertEq(stakes.treasury(), newTreasury);
        _submitEth(alice, MARKET, ORIGINAL, "hello", 1 ether);
        assertEq(newTreasury.balance, 0.07 ether, "fees go to the new treasury");
        assertEq(treasury.balance, 0);

        vm.prank(owner);
        vm.expectRevert(SubmissionStakes.ZeroAddress.selector);
        stakes.setTreasury(address(0));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        stakes.setTreasury(alice);
    }

    // ---- fee rounding ----

    function testFeeRoundsUp() public view {
        assertEq(stakes.feeFor(0), 0);
        assertEq(stakes.feeFor(1), 1, "0.07 rounds up to 1");
        assertEq(stakes.feeFor(14), 1, "0.98 -> 1");
        assertEq(stakes.feeFor(100), 7, "exact");
        assertEq(stakes.feeFor(101), 8, "7.07 -> 8");
        assertEq(stakes.feeFor(10_000), 700, "exact");
        assertEq(stakes.feeFor(10_001), 701, "700.07 -> 701");
        assertEq(stakes.feeFor(1 ether), 0.07 ether);
        assertEq(stakes.feeFor(1e8 + 1), 7e6 + 1);
        // No overflow for the largest stakes.
        uint256 max = type(uint256).max; // 7% = 7/100, computed without overflow
        assertEq(stakes.feeFor(max), max / 100 * 7 + ((max % 100) * 7 + 99) / 100);
    }

    function testZeroFee() public {
        vm.prank(owner);
        stakes.setFeeBps(0);
        assertEq(stakes.feeFor(12345), 0);
        _submitEth(alice, MARKET, ORIGINAL, "free", 1 ether);
        assertEq(treasury.balance, 0);
        assertEq(address(stakes).balance, 1 ether);
    }

    function testFuzz_FeeRoundsUp(uint256 stake, uint16 bpsRaw) public {
        uint16 bps = uint16(bound(bpsRaw, 0, 10_000));
        stake = bound(stake, 0, type(uint256).max / 10_000);
        vm.prank(owner);
        stakes.setFeeBps(bps);
        uint256 fee = stakes.feeFor(stake);
        uint256 exact = stake * bps; // fee * 10_000 must cover this, by less than 10_000
        assertTrue(fee * 10_000 >= exact, "never undercharged");
        assertTrue(fee * 10_000 - exact < 10_000, "by less than one base unit");
        assertTrue(fee <= stake, "fee never exceeds the stake");
    }

    // ---- markets ----

    function testCreateMarket() public {
        address[] memory oracles = _oracles();
        vm.expectEmit(true, false, false, true, address(stakes));
        emit SubmissionStakes.MarketCreated(MARKET2, START + 10, END, oracles, "{}");
        vm.prank(operator);
        stakes.createMarket(MARKET2, START + 10, END, oracles, "{}");
        (uint64 startTime, uint64 endTime, bool resolved, uint256 winner, uint256 count, bool hasOriginal) =
            stakes.getMarket(MARKET2);
        assertEq(uint256(startTime), START + 10);
        assertEq(uint256(endTime), END);
        assertFalse(resolved, "unresolved");
        assertEq(winner, 0);
        assertEq(count, 0);
        assertFalse(hasOriginal, "no original");
        address[] memory stored = stakes.getMarketOracles(MARKET2);
        assertEq(stored.length, 2);
        assertEq(stored[0], oracle);
        assertEq(stored[1], oracle2);
        assertTrue(stakes.isOracle(MARKET2, oracle2), "oracle2");
        assertFalse(stakes.isOracle(MARKET2, operator), "operator is no oracle");
    }

    function testCreateMarketRejections() public {
        vm.prank(alice);
        vm.expectRevert(SubmissionStakes.NotOperator.selector);
        stakes.createMarket(MARKET2, START, END, _oracles(), "");

        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketExists.selector, MARKET));
        stakes.createMarket(MARKET, START, END, _oracles(), "");

        vm.prank(operator);
        vm.expectRevert(SubmissionStakes.InvalidTimes.selector);
        stakes.createMarket(MARKET2, END, END, _oracles(), "");
        vm.prank(operator);
        vm.expectRevert(SubmissionStakes.InvalidTimes.selector);
        stakes.createMarket(MARKET2, END, START, _oracles(), "");

        vm.prank(operator);
        vm.expectRevert(SubmissionStakes.NoOracles.selector);
        stakes.createMarket(MARKET2, START, END, new address[](0), "");

        address[] memory withZero = new address[](2);
        withZero[0] = oracle;
        vm.prank(operator);
        vm.expectRevert(SubmissionStakes.ZeroAddress.selector);
        stakes.createMarket(MARKET2, START, END, withZero, "");
    }

    function testDisabledOperatorCannotCreate() public {
        vm.prank(owner);
        stakes.setOperator(operator, false);
        vm.prank(operator);
        vm.expectRevert(SubmissionStakes.NotOperator.selector);
        stakes.createMarket(MARKET2, START, END, _oracles(), "");
    }

    function testUnknownMarket() public {
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotFound.selector, MARKET2));
        stakes.getMarket(MARKET2);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotFound.selector, MARKET2));
        stakes.submit{value: 2 ether}(MARKET2, ORIGINAL, "x", address(0), 1 ether);
        vm.prank(oracle);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotFound.selector, MARKET2));
        stakes.resolveMarket(MARKET2, 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotFound.selector, MARKET2));
        stakes.claim(MARKET2, address(0));
    }

    // ---- submit ----

    function testSubmitOriginalWithEth() public {
        uint256 stake = 1 ether;
        uint256 fee = 0.07 ether;
        vm.expectEmit(true, true, true, true, address(stakes));
        emit SubmissionStakes.SubmissionCreated(
            MARKET, 1, alice, ORIGINAL, "The actor says hello", address(0), stake, fee, bytes32(0)
        );
        vm.prank(alice);
        uint256 id = stakes.submit{value: stake + fee}(MARKET, ORIGINAL, "The actor says hello", address(0), stake);
        assertEq(id, 1);
        assertEq(treasury.balance, fee, "fee to the treasury");
        assertEq(address(stakes).balance, stake, "stake escrowed");
        assertEq(alice.balance, 100 ether - stake - fee);
        assertEq(stakes.marketPool(MARKET, address(0)), stake);
        assertEq(stakes.escrowed(address(0)), stake);
        assertEq(stakes.unaccountedBalance(address(0)), 0);

        (bytes16 marketId, address creator, SubmissionStakes.SubmissionType t, address token, uint256 s) =
            stakes.getSubmission(1);
        assertEq(bytes32(marketId), bytes32(MARKET));
        assertEq(creator, alice);
        assertEq(uint256(t), uint256(ORIGINAL));
        assertEq(token, address(0));
        assertEq(s, stake);
        (,,,, uint256 count, bool hasOriginal) = stakes.getMarket(MARKET);
        assertEq(count, 1);
        assertTrue(hasOriginal, "has original");
    }

    function testSubmitRefundsExcessEth() public {
        vm.prank(alice);
        stakes.submit{value: 5 ether}(MARKET, ORIGINAL, "hi", address(0), 1 ether);
        assertEq(alice.balance, 100 ether - 1.07 ether, "excess refunded");
        assertEq(address(stakes).balance, 1 ether);
        assertEq(treasury.balance, 0.07 ether);
    }

    function testSubmitInsufficientEth() public {
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(SubmissionStakes.InsufficientPayment.selector, 1.07 ether, 1.07 ether - 1)
        );
        stakes.submit{value: 1.07 ether - 1}(MARKET, ORIGINAL, "hi", address(0), 1 ether);
        // Rounding is charged too: a 1 wei stake costs 2 wei.
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.InsufficientPayment.selector, 2, 1));
        stakes.submit{value: 1}(MARKET, ORIGINAL, "hi", address(0), 1);
    }

    function testSubmitWithCbBTC() public {
        uint256 stake = 0.5e8;
        uint256 fee = 0.035e8;
        vm.expectEmit(true, true, true, true, address(stakes));
        emit SubmissionStakes.SubmissionCreated(
            MARKET, 1, alice, ORIGINAL, "btc", address(cbbtc), stake, fee, bytes32(0)
        );
        uint256 id = _submitBtc(alice, MARKET, ORIGINAL, "btc", stake);
        assertEq(id, 1);
        assertEq(cbbtc.balanceOf(alice), 10e8 - stake - fee);
        assertEq(cbbtc.balanceOf(treasury), fee);
        assertEq(cbbtc.balanceOf(address(stakes)), stake);
        assertEq(stakes.marketPool(MARKET, address(cbbtc)), stake);
        assertEq(stakes.marketPool(MARKET, address(0)), 0);
    }

    function testSubmitErc20Rejections() public {
        vm.prank(alice);
        vm.expectRevert(SubmissionStakes.UnexpectedValue.selector);
        stakes.submit{value: 1}(MARKET, ORIGINAL, "x", address(cbbtc), 1e8);

        usdc.mint(alice, 1e6);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.TokenNotAllowed.selector, address(usdc)));
        stakes.submit(MARKET, ORIGINAL, "x", address(usdc), 1e6);

        vm.prank(alice);
        cbbtc.approve(address(stakes), 0);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(stakes), 0, 1e8)
        );
        stakes.submit(MARKET, ORIGINAL, "x", address(cbbtc), 1e8);
    }

    function testZeroStake() public {
        vm.prank(alice);
        vm.expectRevert(SubmissionStakes.ZeroStake.selector);
        stakes.submit(MARKET, ORIGINAL, "x", address(0), 0);
    }

    function testOnlyOneOriginal() public {
        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.OriginalExists.selector, MARKET));
        stakes.submit{value: 2 ether}(MARKET, ORIGINAL, "second", address(0), 1 ether);
        uint256 btcBefore = cbbtc.balanceOf(bob);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.OriginalExists.selector, MARKET));
        stakes.submit(MARKET, ORIGINAL, "second", address(cbbtc), 1e8);
        assertEq(cbbtc.balanceOf(bob), btcBefore);
    }

    function testCompetitorAndNullNeedOriginal() public {
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.OriginalRequired.selector, MARKET));
        stakes.submit{value: 2 ether}(MARKET, COMPETITOR, "competing", address(0), 1 ether);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.OriginalRequired.selector, MARKET));
        stakes.submit{value: 2 ether}(MARKET, NULL, "", address(0), 1 ether);

        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        assertEq(_submitEth(bob, MARKET, COMPETITOR, "competing", 1 ether), 2);
        assertEq(_submitBtc(carol, MARKET, NULL, "", 1e8), 3);
        assertEq(_submitEth(carol, MARKET, COMPETITOR, "another", 2 ether), 4, "any number of competitors");
        (,,,, uint256 count,) = stakes.getMarket(MARKET);
        assertEq(count, 4);
        (,, SubmissionStakes.SubmissionType t,,) = stakes.getSubmission(3);
        assertEq(uint256(t), uint256(NULL));
    }

    function testTextRules() public {
        vm.startPrank(alice);
        vm.expectRevert(SubmissionStakes.InvalidText.selector);
        stakes.submit{value: 2 ether}(MARKET, ORIGINAL, "", address(0), 1 ether);
        vm.expectRevert(SubmissionStakes.InvalidText.selector);
        stakes.submit{value: 2 ether}(MARKET, ORIGINAL, _text(1001), address(0), 1 ether);
        stakes.submit{value: 2 ether}(MARKET, ORIGINAL, _text(1000), address(0), 1 ether);
        vm.expectRevert(SubmissionStakes.InvalidText.selector);
        stakes.submit{value: 2 ether}(MARKET, COMPETITOR, "", address(0), 1 ether);
        vm.expectRevert(SubmissionStakes.InvalidText.selector);
        stakes.submit{value: 2 ether}(MARKET, NULL, "not silent", address(0), 1 ether);
        vm.stopPrank();
        assertEq(stakes.MAX_TEXT_BYTES(), 1000);
    }

    function testMarketWindow() public {
        _createMarket(MARKET2, START + 1 days, START + 2 days);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotOpen.selector, MARKET2));
        stakes.submit{value: 2 ether}(MARKET2, ORIGINAL, "early", address(0), 1 ether);

        vm.warp(START + 1 days); // opens at startTime
        _submitEth(alice, MARKET2, ORIGINAL, "on time", 1 ether);
        vm.warp(START + 2 days - 1);
        _submitEth(bob, MARKET2, COMPETITOR, "last second", 1 ether);

        vm.warp(START + 2 days); // closed at endTime
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotOpen.selector, MARKET2));
        stakes.submit{value: 2 ether}(MARKET2, COMPETITOR, "late", address(0), 1 ether);
    }

    function testNoSubmissionsAfterResolution() public {
        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        vm.warp(END);
        vm.prank(oracle);
        stakes.resolveMarket(MARKET, 1);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketAlreadyResolved.selector, MARKET));
        stakes.submit{value: 2 ether}(MARKET, COMPETITOR, "late", address(0), 1 ether);
    }

    function testSubmissionIdsAreGlobal() public {
        _createMarket(MARKET2, START, END);
        assertEq(_submitEth(alice, MARKET, ORIGINAL, "a", 1 ether), 1);
        assertEq(_submitEth(bob, MARKET2, ORIGINAL, "b", 1 ether), 2);
        assertEq(_submitBtc(carol, MARKET, COMPETITOR, "c", 1e8), 3);
        assertEq(stakes.nextSubmissionId(), 4);
        (bytes16 m,,,,) = stakes.getSubmission(2);
        assertEq(bytes32(m), bytes32(MARKET2));
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.SubmissionNotFound.selector, uint256(4)));
        stakes.getSubmission(4);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.SubmissionNotFound.selector, uint256(0)));
        stakes.getSubmission(0);
    }

    function testRefundCannotReenter() public {
        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        ReentrantSubmitter attacker = new ReentrantSubmitter(stakes);
        vm.deal(address(attacker), 0);
        vm.expectRevert(ReentrancyGuard.ReentrancyGuardReentrantCall.selector);
        attacker.go{value: 2 ether}(MARKET, 1 ether);
    }

    // ---- recordSubmission (transfer-then-POST) ----

    function testRecordSubmissionEth() public {
        bytes32 txHash = keccak256("tx-1");
        vm.prank(alice);
        (bool ok,) = address(stakes).call{value: 1.07 ether}("");
        assertTrue(ok, "plain ETH transfer accepted");
        assertEq(stakes.unaccountedBalance(address(0)), 1.07 ether);

        vm.expectEmit(true, true, true, true, address(stakes));
        emit SubmissionStakes.SubmissionCreated(
            MARKET, 1, alice, ORIGINAL, "posted", address(0), 1 ether, 0.07 ether, txHash
        );
        vm.prank(operator);
        uint256 id = stakes.recordSubmission(MARKET, alice, ORIGINAL, "posted", address(0), 1 ether, txHash);
        assertEq(id, 1);
        assertTrue(stakes.isPaymentUsed(txHash), "hash recorded");
        assertEq(treasury.balance, 0.07 ether);
        assertEq(address(stakes).balance, 1 ether);
        assertEq(stakes.unaccountedBalance(address(0)), 0);
        assertEq(stakes.marketPool(MARKET, address(0)), 1 ether);
        (, address creator,,,) = stakes.getSubmission(1);
        assertEq(creator, alice);
    }

    function testRecordSubmissionErc20() public {
        bytes32 txHash = keccak256("tx-btc");
        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        vm.prank(bob);
        cbbtc.transfer(address(stakes), 1.07e8);
        vm.prank(operator);
        uint256 id = stakes.recordSubmission(MARKET, bob, NULL, "", address(cbbtc), 1e8, txHash);
        assertEq(id, 2);
        assertEq(cbbtc.balanceOf(treasury), 0.07e8);
        assertEq(cbbtc.balanceOf(address(stakes)), 1e8);
        assertEq(stakes.escrowed(address(cbbtc)), 1e8);
        assertEq(stakes.marketPool(MARKET, address(cbbtc)), 1e8);
    }

    function testRecordSubmissionReplayedHash() public {
        bytes32 txHash = keccak256("tx-1");
        vm.deal(address(stakes), 10 ether);
        vm.prank(operator);
        stakes.recordSubmission(MARKET, alice, ORIGINAL, "posted", address(0), 1 ether, txHash);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.PaymentAlreadyUsed.selector, txHash));
        stakes.recordSubmission(MARKET, alice, COMPETITOR, "again", address(0), 1 ether, txHash);
    }

    function testRecordSubmissionInsufficientUnaccounted() public {
        // Escrowed stakes are not available to back a new record.
        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.InsufficientPayment.selector, 1.07 ether, 0));
        stakes.recordSubmission(MARKET, bob, COMPETITOR, "free ride", address(0), 1 ether, keccak256("tx-2"));

        // A transfer short of stake + fee (the rounded-up fee included) is not enough.
        vm.prank(bob);
        (bool ok,) = address(stakes).call{value: 1.07 ether - 1}("");
        assertTrue(ok, "sent");
        vm.prank(operator);
        vm.expectRevert(
            abi.encodeWithSelector(SubmissionStakes.InsufficientPayment.selector, 1.07 ether, 1.07 ether - 1)
        );
        stakes.recordSubmission(MARKET, bob, COMPETITOR, "short", address(0), 1 ether, keccak256("tx-2"));
        assertFalse(stakes.isPaymentUsed(keccak256("tx-2")), "a failed record does not burn the hash");

        // ERC-20 balance is tracked per asset: ETH does not back a cbBTC stake.
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.InsufficientPayment.selector, 2, 0));
        stakes.recordSubmission(MARKET, bob, COMPETITOR, "btc", address(cbbtc), 1, keccak256("tx-3"));
    }

    function testRecordSubmissionRejections() public {
        vm.deal(address(stakes), 10 ether);
        vm.prank(alice);
        vm.expectRevert(SubmissionStakes.NotOperator.selector);
        stakes.recordSubmission(MARKET, alice, ORIGINAL, "x", address(0), 1 ether, keccak256("tx"));

        vm.startPrank(operator);
        vm.expectRevert(SubmissionStakes.ZeroPaymentHash.selector);
        stakes.recordSubmission(MARKET, alice, ORIGINAL, "x", address(0), 1 ether, bytes32(0));
        vm.expectRevert(SubmissionStakes.ZeroAddress.selector);
        stakes.recordSubmission(MARKET, address(0), ORIGINAL, "x", address(0), 1 ether, keccak256("tx"));
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.TokenNotAllowed.selector, alice));
        stakes.recordSubmission(MARKET, alice, ORIGINAL, "x", alice, 1 ether, keccak256("tx"));
        vm.expectRevert(SubmissionStakes.ZeroStake.selector);
        stakes.recordSubmission(MARKET, alice, ORIGINAL, "x", address(0), 0, keccak256("tx"));
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotFound.selector, MARKET2));
        stakes.recordSubmission(MARKET2, alice, ORIGINAL, "x", address(0), 1 ether, keccak256("tx"));
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.OriginalRequired.selector, MARKET));
        stakes.recordSubmission(MARKET, alice, COMPETITOR, "x", address(0), 1 ether, keccak256("tx"));
        vm.expectRevert(SubmissionStakes.InvalidText.selector);
        stakes.recordSubmission(MARKET, alice, ORIGINAL, "", address(0), 1 ether, keccak256("tx"));
        stakes.recordSubmission(MARKET, alice, ORIGINAL, "x", address(0), 1 ether, keccak256("tx"));
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.OriginalExists.selector, MARKET));
        stakes.recordSubmission(MARKET, bob, ORIGINAL, "y", address(0), 1 ether, keccak256("tx2"));
        vm.warp(END);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotOpen.selector, MARKET));
        stakes.recordSubmission(MARKET, bob, COMPETITOR, "y", address(0), 1 ether, keccak256("tx2"));
        vm.stopPrank();
    }

    // ---- resolution ----

    function testResolveMarket() public {
        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        _submitEth(bob, MARKET, COMPETITOR, "second", 1 ether);

        vm.prank(oracle2);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotEnded.selector, MARKET));
        stakes.resolveMarket(MARKET, 2);

        vm.warp(END);
        vm.prank(operator);
        vm.expectRevert(SubmissionStakes.NotOracle.selector);
        stakes.resolveMarket(MARKET, 2);
        vm.prank(owner);
        vm.expectRevert(SubmissionStakes.NotOracle.selector);
        stakes.resolveMarket(MARKET, 2);

        vm.expectEmit(true, true, true, true, address(stakes));
        emit SubmissionStakes.MarketResolved(MARKET, 2, oracle2);
        vm.prank(oracle2);
        stakes.resolveMarket(MARKET, 2);
        (,, bool resolved, uint256 winner,,) = stakes.getMarket(MARKET);
        assertTrue(resolved, "resolved");
        assertEq(winner, 2);

        vm.prank(oracle);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketAlreadyResolved.selector, MARKET));
        stakes.resolveMarket(MARKET, 1);
    }

    function testResolveWinnerMustBelongToMarket() public {
        _createMarket(MARKET2, START, END);
        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        _submitEth(bob, MARKET2, ORIGINAL, "other market", 1 ether);
        vm.warp(END);
        vm.startPrank(oracle);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.SubmissionNotInMarket.selector, uint256(2)));
        stakes.resolveMarket(MARKET, 2);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.SubmissionNotInMarket.selector, uint256(0)));
        stakes.resolveMarket(MARKET, 0);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.SubmissionNotInMarket.selector, uint256(99)));
        stakes.resolveMarket(MARKET, 99);
        vm.stopPrank();
    }

    function testZeroMarketIdCannotResolveToMissingSubmission() public {
        // An unset submission reads as market 0; the all-zero market id must not match it.
        _createMarket(bytes16(0), START, END);
        _submitEth(alice, bytes16(0), ORIGINAL, "zero", 1 ether);
        vm.warp(END);
        vm.prank(oracle);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.SubmissionNotInMarket.selector, uint256(42)));
        stakes.resolveMarket(bytes16(0), 42);
        vm.prank(oracle);
        stakes.resolveMarket(bytes16(0), 1);
    }

    // ---- claims ----

    function testClaimWholePoolPerAsset() public {
        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        _submitEth(bob, MARKET, COMPETITOR, "second", 2 ether);
        _submitBtc(carol, MARKET, NULL, "", 0.3e8);
        _submitBtc(alice, MARKET, COMPETITOR, "third", 0.2e8);
        // Another market's stakes are not part of this pool.
        _createMarket(MARKET2, START, END);
        _submitEth(carol, MARKET2, ORIGINAL, "elsewhere", 5 ether);

        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(SubmissionStakes.MarketNotResolved.selector, MARKET));
        stakes.claim(MARKET, address(0));

        vm.warp(END);
        vm.prank(oracle);
        stakes.resolveMarket(MARKET, 2); // bob's competitor wins

        vm.prank(alice);
        vm.expectRevert(SubmissionStakes.NotWinner.selector);
        stakes.claim(MARKET, address(0));

        uint256 bobEth = bob.balance;
        vm.expectEmit(true, true, true, true, address(stakes));
        emit SubmissionStakes.PayoutClaimed(MARKET, 2, bob, address(0), 3 ether);
        vm.prank(bob);
        uint256 amount = stakes.claim(MARKET, address(0));
        assertEq(amount, 3 ether);
        assertEq(bob.balance - bobEth, 3 ether);
        assertTrue(stakes.poolClaimed(MARKET, address(0)), "ETH pool claimed");
        assertEq(address(stakes).balance, 5 ether, "the other market's stake stays");
        assertEq(stakes.escrowed(address(0)), 5 ether);

        vm.prank(bob);
        vm.expectRevert(SubmissionStakes.NothingToClaim.selector);
        stakes.claim(MARKET, address(0));

        vm.expectEmit(true, true, true, true, address(stakes));
        emit SubmissionStakes.PayoutClaimed(MARKET, 2, bob, address(cbbtc), 0.5e8);
        vm.prank(bob);
        assertEq(stakes.claim(MARKET, address(cbbtc)), 0.5e8);
        assertEq(cbbtc.balanceOf(bob), 10e8 + 0.5e8);
        assertEq(cbbtc.balanceOf(address(stakes)), 0);
        vm.prank(bob);
        vm.expectRevert(SubmissionStakes.NothingToClaim.selector);
        stakes.claim(MARKET, address(cbbtc));

        // An asset nobody staked in this market has nothing to claim.
        vm.prank(bob);
        vm.expectRevert(SubmissionStakes.NothingToClaim.selector);
        stakes.claim(MARKET, address(usdc));
    }

    function testClaimAfterTokenDisallowed() public {
        _submitBtc(alice, MARKET, ORIGINAL, "first", 1e8);
        vm.prank(owner);
        stakes.setStakeToken(address(cbbtc), false);
        vm.warp(END);
        vm.prank(oracle);
        stakes.resolveMarket(MARKET, 1);
        vm.prank(alice);
        assertEq(stakes.claim(MARKET, address(cbbtc)), 1e8, "escrow is paid out even if the token was delisted");
    }

    function testUnaccountedFundsSurviveClaims() public {
        _submitEth(alice, MARKET, ORIGINAL, "first", 1 ether);
        // A payment awaiting recordSubmission sits in the contract meanwhile.
        vm.prank(bob);
        (bool ok,) = address(stakes).call{value: 1.07 ether}("");
        assertTrue(ok, "sent");
        vm.warp(END);
        vm.prank(oracle);
        stakes.resolveMarket(MARKET, 1);
        vm.prank(alice);
        assertEq(stakes.claim(MARKET, address(0)), 1 ether, "only the pool");
        assertEq(stakes.unaccountedBalance(address(0)), 1.07 ether);
    }

    function testFuzz_SubmitEthAccounting(uint256 stake, uint256 extra, uint16 bpsRaw) public {
        uint16 bps = uint16(bound(bpsRaw, 0, 10_000));
        stake = bound(stake, 1, 10 ether);
        extra = bound(extra, 0, 10 ether);
        vm.prank(owner);
        stakes.setFeeBps(bps);
        uint256 fee = stakes.feeFor(stake);
        vm.deal(alice, stake + fee + extra);
        vm.prank(alice);
        stakes.submit{value: stake + fee + extra}(MARKET, ORIGINAL, "fuzz", address(0), stake);
        assertEq(alice.balance, extra, "only the excess comes back");
        assertEq(treasury.balance, fee);
        assertEq(address(stakes).balance, stake);
        assertEq(stakes.unaccountedBalance(address(0)), 0);
    }
}
