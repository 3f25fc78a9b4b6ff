// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title SubmissionStakes
/// @notice Prediction-market submissions with stakes (Clockchain). Operators open
/// markets; anyone submits an original, competitor or null prediction while a
/// market is open, paying stake + fee (7% by default, rounded up): the fee goes
/// to the treasury, the stake stays escrowed until an oracle resolves the market
/// and the winner claims the pool. Every state change emits an event carrying
/// what an indexer needs.
contract SubmissionStakes is Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    enum SubmissionType {
        Original,
        Competitor,
        Null
    }

    struct Market {
        uint64 startTime;
        uint64 endTime;
        bool resolved;
        bool hasOriginal;
        uint256 winningSubmissionId;
        uint256 submissionCount;
        address[] oracles;
    }

    struct Submission {
        bytes16 marketId;
        address creator;
        SubmissionType submissionType;
        address stakeToken;
        uint256 stake;
    }

    uint256 public constant FEE_DENOMINATOR = 10_000;
    uint256 public constant MAX_TEXT_BYTES = 1_000;
    address public constant NATIVE = address(0);

    address public treasury;
    uint16 public feeBps;
    uint256 public nextSubmissionId = 1;

    mapping(address => bool) public isOperator;
    mapping(address => bool) private _stakeTokens;
    mapping(bytes16 => Market) private _markets;
    mapping(uint256 => Submission) private _submissions;
    mapping(bytes32 => bool) public isPaymentUsed;
    /// @notice Stakes a market took in an asset (unchanged by the payout; see poolClaimed).
    mapping(bytes16 => mapping(address => uint256)) public marketPool;
    mapping(bytes16 => mapping(address => bool)) public poolClaimed;
    /// @notice Stakes held per asset; anything above it is unaccounted (a
    /// transfer awaiting recordSubmission).
    mapping(address => uint256) public escrowed;

    event MarketCreated(bytes16 indexed marketId, uint64 startTime, uint64 endTime, address[] oracles, string metadata);
    event SubmissionCreated(
        bytes16 indexed marketId,
        uint256 indexed submissionId,
        address indexed creator,
        SubmissionType submissionType,
        string predictedText,
        address stakeToken,
        uint256 stake,
        uint256 fee,
        bytes32 paymentTxHash
    );
    event MarketResolved(bytes16 indexed marketId, uint256 indexed winningSubmissionId, address indexed oracle);
    event PayoutClaimed(
        bytes16 indexed marketId,
        uint256 indexed submissionId,
        address indexed winner,
        address stakeToken,
        uint256 amount
    );
    event OperatorUpdated(address indexed operator, bool enabled);
    event StakeTokenUpdated(address indexed token, bool allowed);
    event FeeUpdated(uint16 feeBps);
    event TreasuryUpdated(address indexed treasury);

    error NotOperator();
    error NotOracle();
    error MarketExists(bytes16 marketId);
    error MarketNotFound(bytes16 marketId);
    error MarketNotOpen(bytes16 marketId);
    error MarketNotEnded(bytes16 marketId);
    error MarketAlreadyResolved(bytes16 marketId);
    error MarketNotResolved(bytes16 marketId);
    error InvalidTimes();
    error NoOracles();
    error OriginalExists(bytes16 marketId);
    error OriginalRequired(bytes16 marketId);
    error InvalidText();
    error TokenNotAllowed(address token);
    error ZeroStake();
    error InsufficientPayment(uint256 required, uint256 provided);
    error UnexpectedValue();
    error PaymentAlreadyUsed(bytes32 paymentTxHash);
    error ZeroPaymentHash();
    error SubmissionNotInMarket(uint256 submissionId);
    error SubmissionNotFound(uint256 submissionId);
    error NothingToClaim();
    error NotWinner();
    error InvalidFee(uint16 feeBps);
    error ZeroAddress();

    modifier onlyOperator() {
        if (!isOperator[msg.sender]) revert NotOperator();
        _;
    }

    constructor(address initialOwner, address treasury_, uint16 feeBps_) Ownable(initialOwner) {
        if (treasury_ == address(0)) revert ZeroAddress();
        if (feeBps_ > FEE_DENOMINATOR) revert InvalidFee(feeBps_);
        treasury = treasury_;
        feeBps = feeBps_;
        emit TreasuryUpdated(treasury_);
        emit FeeUpdated(feeBps_);
    }

    receive() external payable {}

    // ---- owner ----

    function setOperator(address operator, bool enabled) external onlyOwner {
        isOperator[operator] = enabled;
        emit OperatorUpdated(operator, enabled);
    }

    function setStakeToken(address token, bool allowed) external onlyOwner {
        if (token == NATIVE) revert ZeroAddress();
        _stakeTokens[token] = allowed;
        emit StakeTokenUpdated(token, allowed);
    }

    function setFeeBps(uint16 feeBps_) external onlyOwner {
        if (feeBps_ > FEE_DENOMINATOR) revert InvalidFee(feeBps_);
        feeBps = feeBps_;
        emit FeeUpdated(feeBps_);
    }

    function setTreasury(address treasury_) external onlyOwner {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryUpdated(treasury_);
    }

    // ---- markets ----

    function createMarket(
        bytes16 marketId,
        uint64 startTime,
        uint64 endTime,
        address[] calldata oracles,
        string calldata metadata
    ) external onlyOperator {
        Market storage m = _markets[marketId];
        if (m.endTime != 0) revert MarketExists(marketId);
        if (endTime <= startTime) revert InvalidTimes();
        if (oracles.length == 0) revert NoOracles();
        for (uint256 i = 0; i < oracles.length; i++) {
            if (oracles[i] == address(0)) revert ZeroAddress();
        }
        m.startTime = startTime;
        m.endTime = endTime;
        m.oracles = oracles;
        emit MarketCreated(marketId, startTime, endTime, oracles, metadata);
    }

    /// @notice The fee on a stake: feeBps of it, rounded up (never undercharged).
    function feeFor(uint256 stake) public view returns (uint256) {
        return Math.mulDiv(stake, feeBps, FEE_DENOMINATOR, Math.Rounding.Ceil);
    }

    function isStakeTokenAllowed(address token) public view returns (bool) {
        return token == NATIVE || _stakeTokens[token];
    }

    /// @notice Submit and pay in one call: ETH as msg.value (excess refunded) or
    /// an allowed ERC-20 pulled with transferFrom.
    function submit(
        bytes16 marketId,
        SubmissionType submissionType,
        string calldata predictedText,
        address stakeToken,
        uint256 stake
    ) external payable nonReentrant returns (uint256 submissionId) {
        uint256 fee = feeFor(stake);
        submissionId = _record(marketId, msg.sender, submissionType, predictedText, stakeToken, stake, fee, bytes32(0));
        uint256 required = stake + fee;
        if (stakeToken == NATIVE) {
            if (msg.value < required) revert InsufficientPayment(required, msg.value);
            Address.sendValue(payable(treasury), fee);
            if (msg.value > required) Address.sendValue(payable(msg.sender), msg.value - required);
        } else {
            if (msg.value != 0) revert UnexpectedValue();
            IERC20(stakeToken).safeTransferFrom(msg.sender, address(this), stake);
            IERC20(stakeToken).safeTransferFrom(msg.sender, treasury, fee);
        }
    }

    /// @notice Record a submission its creator already paid by a plain transfer
    /// of stake + fee to this contract (the documented transfer-then-POST flow).
    function recordSubmission(
        bytes16 marketId,
        address creator,
        SubmissionType submissionType,
        string calldata predictedText,
        address stakeToken,
        uint256 stake,
        bytes32 paymentTxHash
    ) external onlyOperator nonReentrant returns (uint256 submissionId) {
        if (paymentTxHash == bytes32(0)) revert ZeroPaymentHash();
        if (isPaymentUsed[paymentTxHash]) revert PaymentAlreadyUsed(paymentTxHash);
        if (creator == address(0)) revert ZeroAddress();
        // Checked before the balance is read, so an arbitrary address is never called.
        if (!isStakeTokenAllowed(stakeToken)) revert TokenNotAllowed(stakeToken);
        isPaymentUsed[paymentTxHash] = true;
        uint256 fee = feeFor(stake);
        uint256 available = unaccountedBalance(stakeToken);
        if (available < stake + fee) revert InsufficientPayment(stake + fee, available);
        submissionId = _record(marketId, creator, submissionType, predictedText, stakeToken, stake, fee, paymentTxHash);
        if (stakeToken == NATIVE) {
            Address.sendValue(payable(treasury), fee);
        } else {
            IERC20(stakeToken).safeTransfer(treasury, fee);
        }
    }

    /// @notice An oracle of the market names the winning submission after the end.
    function resolveMarket(bytes16 marketId, uint256 winningSubmissionId) external {
        Market storage m = _market(marketId);
        if (!_isOracle(m, msg.sender)) revert NotOracle();
        if (block.timestamp < m.endTime) revert MarketNotEnded(marketId);
        if (m.resolved) revert MarketAlreadyResolved(marketId);
        // A never-created id reads as creator 0 and market 0, which the all-zero market id would match.
        Submission storage winner = _submissions[winningSubmissionId];
        if (winner.creator == address(0) || winner.marketId != marketId) {
            revert SubmissionNotInMarket(winningSubmissionId);
        }
        m.resolved = true;
        m.winningSubmissionId = winningSubmissionId;
        emit MarketResolved(marketId, winningSubmissionId, msg.sender);
    }

    /// @notice The winner takes the market's whole pool in one asset.
    function claim(bytes16 marketId, address stakeToken) external nonReentrant returns (uint256 amount) {
        Market storage m = _market(marketId);
        if (!m.resolved) revert MarketNotResolved(marketId);
        uint256 winning = m.winningSubmissionId;
        if (_submissions[winning].creator != msg.sender) revert NotWinner();
        amount = marketPool[marketId][stakeToken];
        if (amount == 0 || poolClaimed[marketId][stakeToken]) revert NothingToClaim();
        poolClaimed[marketId][stakeToken] = true;
        escrowed[stakeToken] -= amount;
        if (stakeToken == NATIVE) {
            Address.sendValue(payable(msg.sender), amount);
        } else {
            IERC20(stakeToken).safeTransfer(msg.sender, amount);
        }
        emit PayoutClaimed(marketId, winning, msg.sender, stakeToken, amount);
    }

    // ---- views ----

    function getMarket(bytes16 marketId)
        external
        view
        returns (
            uint64 startTime,
            uint64 endTime,
            bool resolved,
            uint256 winningSubmissionId,
            uint256 submissionCount,
            bool hasOriginal
        )
    {
        Market storage m = _market(marketId);
        return (m.startTime, m.endTime, m.resolved, m.winningSubmissionId, m.submissionCount, m.hasOriginal);
    }

    /// @notice What this contract holds of an asset beyond the escrowed stakes:
    /// plain transfers that recordSubmission has not yet accounted for.
    function unaccountedBalance(address stakeToken) public view returns (uint256) {
        return Math.saturatingSub(_balance(stakeToken), escrowed[stakeToken]);
    }

    function isOracle(bytes16 marketId, address account) external view returns (bool) {
        return _isOracle(_market(marketId), account);
    }

    function getMarketOracles(bytes16 marketId) external view returns (address[] memory) {
        return _market(marketId).oracles;
    }

    function getSubmission(uint256 submissionId)
        external
        view
        returns (bytes16 marketId, address creator, SubmissionType submissionType, address stakeToken, uint256 stake)
    {
        Submission storage s = _submissions[submissionId];
        if (s.creator == address(0)) revert SubmissionNotFound(submissionId);
        return (s.marketId, s.creator, s.submissionType, s.stakeToken, s.stake);
    }

    // ---- internals ----

    function _record(
        bytes16 marketId,
        address creator,
        SubmissionType submissionType,
        string calldata predictedText,
        address stakeToken,
        uint256 stake,
        uint256 fee,
        bytes32 paymentTxHash
    ) private returns (uint256 submissionId) {
        Market storage m = _market(marketId);
        if (m.resolved) revert MarketAlreadyResolved(marketId);
        if (block.timestamp < m.startTime || block.timestamp >= m.endTime) revert MarketNotOpen(marketId);
        if (stake == 0) revert ZeroStake();
        if (!isStakeTokenAllowed(stakeToken)) revert TokenNotAllowed(stakeToken);
        uint256 textLength = bytes(predictedText).length;
        if (submissionType == SubmissionType.Null) {
            if (textLength != 0) revert InvalidText();
        } else if (textLength == 0 || textLength > MAX_TEXT_BYTES) {
            revert InvalidText();
        }
        if (submissionType == SubmissionType.Original) {
            if (m.hasOriginal) revert OriginalExists(marketId);
            m.hasOriginal = true;
        } else if (!m.hasOriginal) {
            revert OriginalRequired(marketId);
        }
        submissionId = nextSubmissionId++;
        m.submissionCount += 1;
        _submissions[submissionId] = Submission(marketId, creator, submissionType, stakeToken, stake);
        marketPool[marketId][stakeToken] += stake;
        escrowed[stakeToken] += stake;
        emit SubmissionCreated(
            marketId, submissionId, creator, submissionType, predictedText, stakeToken, stake, fee, paymentTxHash
        );
    }

    function _market(bytes16 marketId) private view returns (Market storage m) {
        m = _markets[marketId];
        if (m.endTime == 0) revert MarketNotFound(marketId);
    }

    function _isOracle(Market storage m, address who) private view returns (bool) {
        for (uint256 i = 0; i < m.oracles.length; i++) {
            if (m.oracles[i] == who) return true;
        }
        return false;
    }

    function _balance(address token) private view returns (uint256) {
        return token == NATIVE ? address(this).balance : IERC20(token).balanceOf(address(this));
    }
}
