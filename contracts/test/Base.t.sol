// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @notice The forge cheatcodes these tests use (forge serves them at the
/// standard address without forge-std).
interface Vm {
    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    function warp(uint256 timestamp) external;
    function deal(address account, uint256 newBalance) external;
    function expectRevert() external;
    function expectRevert(bytes4 revertData) external;
    function expectRevert(bytes calldata revertData) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData, address emitter) external;
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function assume(bool condition) external pure;
    function label(address account, string calldata newLabel) external;
    function toString(uint256 value) external pure returns (string memory);
    function toString(address value) external pure returns (string memory);
    function toString(bytes32 value) external pure returns (string memory);
    function toString(bool value) external pure returns (string memory);
}

/// @notice Minimal test base: the cheatcode handle, assertions that revert
/// with a message, and a few helpers. A test fails by reverting.
abstract contract Base {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint256 internal constant DAY = 1 days;
    /// @dev A fixed, realistic start time (Nov 2026) so `now - x` never underflows.
    uint256 internal constant T0 = 1_795_000_000;

    function fail(string memory message) internal pure {
        revert(message);
    }

    function assertTrue(bool condition) internal pure {
        if (!condition) fail("assertTrue failed");
    }

    function assertTrue(bool condition, string memory message) internal pure {
        if (!condition) fail(string.concat("assertTrue failed: ", message));
    }

    function assertFalse(bool condition, string memory message) internal pure {
        if (condition) fail(string.concat("assertFalse failed: ", message));
    }

    function assertEq(uint256 a, uint256 b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(uint256 a, uint256 b, string memory message) internal pure {
        if (a != b) {
            fail(string.concat("assertEq(uint) failed: ", vm.toString(a), " != ", vm.toString(b), " ", message));
        }
    }

    function assertEq(address a, address b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(address a, address b, string memory message) internal pure {
        if (a != b) {
            fail(string.concat("assertEq(address) failed: ", vm.toString(a), " != ", vm.toString(b), " ", message));
        }
    }

    function assertEq(bool a, bool b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(bool a, bool b, string memory message) internal pure {
        if (a != b) {
            fail(string.concat("assertEq(bool) failed: ", vm.toString(a), " != ", vm.toString(b), " ", message));
        }
    }

    function assertEq(bytes32 a, bytes32 b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(bytes32 a, bytes32 b, string memory message) internal pure {
        if (a != b) {
            fail(string.concat("assertEq(bytes32) failed: ", vm.toString(a), " != ", vm.toString(b), " ", message));
        }
    }

    function assertEq(string memory a, string memory b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(string memory a, string memory b, string memory message) internal pure {
        if (keccak256(bytes(a)) != keccak256(bytes(b))) {
            fail(string.concat("assertEq(string) failed: \"", a, "\" != \"", b, "\" ", message));
        }
    }

    /// @dev Maps any `x` into [lo, hi] without rejecting fuzz inputs.
    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        if (lo > hi) fail("bound: lo > hi");
        if (lo == 0 && hi == type(uint256).max) return x;
        return lo + (x % (hi - lo + 1));
    }
}
