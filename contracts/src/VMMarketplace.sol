// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @notice The EIP-3009 entry point the marketplace pays through.
interface IReceiveWithAuthorization {
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;
}

/// @title VMMarketplace
/// @notice VMs sold as ERC-721 NFTs for USDC (ClawCloud). Tiers 0-7 each have a
/// price per day; a purchase pays price x days to the treasury, mints the NFT
/// and records its expiry. Whoever owns the NFT owns the VM's access.
contract VMMarketplace is ERC721, Ownable, Pausable {
    using SafeERC20 for IERC20;

    uint8 public constant MAX_TIER = 7;
    uint256 public constant MAX_DURATION_DAYS = 3650;

    struct Tier {
        uint256 pricePerDay;
        bool active;
        string name;
    }

    struct VM {
        uint8 tier;
        uint64 purchaseDate;
        uint64 expiresAt;
    }

    IERC20 public immutable usdc;
    address public treasury;
    uint256 public nextTokenId = 1;

    mapping(uint8 tier => Tier) private _tiers;
    mapping(uint256 tokenId => VM) private _vms;

    event VMPurchased(
        uint256 indexed tokenId,
        address indexed buyer,
        uint8 tier,
        uint16 durationDays,
        uint256 purchaseDate,
        uint256 totalCost
    );
    event VMExtended(
        uint256 indexed tokenId, address indexed payer, uint16 extraDays, uint256 newExpiresAt, uint256 totalCost
    );
    event TierUpdated(uint8 indexed tier, uint256 pricePerDay, bool active, string name);
    event TreasuryUpdated(address indexed treasury);

    error ZeroDuration();
    error UnknownTier(uint8 tier);
    error InactiveTier(uint8 tier);
    error DurationTooLong(uint256 durationDays);
    error ZeroAddress();
    error NonexistentVM(uint256 tokenId);

    constructor(address usdc_, address treasury_, address initialOwner)
        ERC721("ClawCloud VM", "CLAWVM")
        Ownable(initialOwner)
    {
        if (usdc_ == address(0) || treasury_ == address(0)) revert ZeroAddress();
        usdc = IERC20(usdc_);
        treasury = treasury_;
        emit TreasuryUpdated(treasury_);
    }

    // ---- tiers ----

    function setTier(uint8 tier, uint256 pricePerDay, bool active, string calldata name) external onlyOwner {
        if (tier > MAX_TIER) revert UnknownTier(tier);
        _tiers[tier] = Tier(pricePerDay, active, name);
        emit TierUpdated(tier, pricePerDay, active, name);
    }

    function getTierConfig(uint8 tier) external view returns (uint256 price, bool active, string memory name) {
        if (tier > MAX_TIER) revert UnknownTier(tier);
        Tier storage t = _tiers[tier];
        return (t.pricePerDay, t.active, t.name);
    }

    // ---- purchases ----

    function purchaseVM(uint8 tier, uint16 durationDays) external whenNotPaused returns (uint256 tokenId) {
        uint256 totalCost = _quote(tier, durationDays);
        usdc.safeTransferFrom(msg.sender, treasury, totalCost);
        return _mintVM(msg.sender, tier, durationDays, totalCost);
    }

    /// @notice Gasless purchase: a relayer submits the buyer's EIP-3009
    /// ReceiveWithAuthorization for exactly the total cost, payable to this contract.
    function purchaseVMWithAuthorization(
        address buyer,
        uint8 tier,
        uint16 durationDays,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external whenNotPaused returns (uint256 tokenId) {
        if (buyer == address(0)) revert ZeroAddress();
        uint256 totalCost = _quote(tier, durationDays);
        IReceiveWithAuthorization(address(usdc))
            .receiveWithAuthorization(buyer, address(this), totalCost, validAfter, validBefore, nonce, v, r, s);
        usdc.safeTransfer(treasury, totalCost);
        return _mintVM(buyer, tier, durationDays, totalCost);
    }

    /// @notice Pay for more days at the tier's current price; anyone may pay.
    function extendVM(uint256 tokenId, uint16 extraDays) external whenNotPaused {
        VM storage vm = _existing(tokenId);
        uint256 totalCost = _quote(vm.tier, extraDays);
        uint256 from = vm.expiresAt > block.timestamp ? vm.expiresAt : block.timestamp;
        uint256 newExpiresAt = from + uint256(extraDays) * 1 days;
        if (newExpiresAt - block.timestamp > MAX_DURATION_DAYS * 1 days) {
            revert DurationTooLong((newExpiresAt - block.timestamp) / 1 days);
        }
        usdc.safeTransferFrom(msg.sender, treasury, totalCost);
        vm.expiresAt = uint64(newExpiresAt);
        emit VMExtended(tokenId, msg.sender, extraDays, newExpiresAt, totalCost);
    }

    // ---- views ----

    function isTokenValid(uint256 tokenId) external view returns (bool) {
        return _ownerOf(tokenId) != address(0) && block.timestamp < _vms[tokenId].expiresAt;
    }

    function vmInfo(uint256 tokenId) external view returns (uint8 tier, uint64 purchaseDate, uint64 expiresAt) {
        VM storage vm = _existing(tokenId);
        return (vm.tier, vm.purchaseDate, vm.expiresAt);
    }

    // ---- admin ----

    function setTreasury(address treasury_) external onlyOwner {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryUpdated(treasury_);
    }

    function pause() external onlyOwner {
        _pause();
    }

    function unpause() external onlyOwner {
        _unpause();
    }

    // ---- internals ----

    function _quote(uint8 tier, uint16 durationDays) private view returns (uint256) {
        if (tier > MAX_TIER) revert UnknownTier(tier);
        if (durationDays == 0) revert ZeroDuration();
        if (durationDays > MAX_DURATION_DAYS) revert DurationTooLong(durationDays);
        Tier storage t = _tiers[tier];
        if (!t.active) revert InactiveTier(tier);
        return t.pricePerDay * durationDays;
    }

    function _mintVM(address buyer, uint8 tier, uint16 durationDays, uint256 totalCost)
        private
        returns (uint256 tokenId)
    {
        tokenId = nextTokenId++;
        uint64 expiresAt = uint64(block.timestamp + uint256(durationDays) * 1 days);
        _vms[tokenId] = VM(tier, uint64(block.timestamp), expiresAt);
        // Plain _mint: buyers may be agents' smart wallets without
        // onERC721Received; ownership is what grants access.
        _mint(buyer, tokenId);
        emit VMPurchased(tokenId, buyer, tier, durationDays, block.timestamp, totalCost);
    }

    function _existing(uint256 tokenId) private view returns (VM storage) {
        if (_ownerOf(tokenId) == address(0)) revert NonexistentVM(tokenId);
        return _vms[tokenId];
    }
}
