using System.Runtime.InteropServices;
using SpliceTransport.Interop;

namespace SpliceTransport.Tests.FaultInjection;

/// <summary>
/// <see cref="Syscalls"/>' one retry loop, driven by fake calls that fail with a scripted errno sequence:
/// EINTR is retried with the same call until it gives another answer; every other errno, EAGAIN included,
/// comes back after one call.
/// </summary>
public class RunRetryTests
{
    [Fact]
    public void EintrIsRetriedUntilTheCallSucceeds()
    {
        var script = new Script([Errno.EINTR, Errno.EINTR, Errno.EINTR], success: 42);
        SyscallResult result = Probe.RunScript(script);
        Assert.True(result.IsSuccess);
        Assert.Equal(42, result.Count);
        Assert.Equal(4, script.Calls);
    }

    [Fact]
    public void AnotherErrnoIsReturnedAfterOneCall()
    {
        var script = new Script([Errno.ECONNRESET], success: 42);
        SyscallResult result = Probe.RunScript(script);
        Assert.False(result.IsSuccess);
        Assert.Equal(Errno.ECONNRESET, result.Errno);
        Assert.True(result.IsConnectionReset);
        Assert.False(result.WouldBlock);
        Assert.Equal(0, result.Count);
        Assert.Equal(1, script.Calls);
    }

    [Fact]
    public void AnErrnoAfterEintrIsReturnedAsItIs()
    {
        var script = new Script([Errno.EINTR, Errno.EINTR, Errno.EPIPE], success: 42);
        SyscallResult result = Probe.RunScript(script);
        Assert.Equal(Errno.EPIPE, result.Errno);
        Assert.Equal(3, script.Calls);
    }

    [Fact]
    public void EagainComesBackAsWouldBlockWithoutARetry()
    {
        var script = new Script([Errno.EAGAIN], success: 42);
        SyscallResult result = Probe.RunScript(script);
        Assert.True(result.WouldBlock);
        Assert.False(result.IsSuccess);
        Assert.False(result.IsConnectionReset);
        Assert.Equal(Errno.EAGAIN, result.Errno);
        Assert.Equal(1, script.Calls);
    }

    [Fact]
    public void ZeroIsASuccessNotARetry()
    {
        // 0 is a count (EOF, FIN), not a failure: no errno is consulted, whatever was left in it.
        Marshal.SetLastPInvokeError(Errno.EINTR);
        var script = new Script([], success: 0);
        SyscallResult result = Probe.RunScript(script);
        Assert.True(result.IsSuccess);
        Assert.Equal(0, result.Count);
        Assert.Equal(1, script.Calls);
    }

    /// <summary>The errnos the fake call fails with, in order, then the count it returns; and how often it ran.</summary>
    private sealed class Script(int[] errnos, nint success)
    {
        public int Calls;

        public nint Next()
        {
            int call = Calls++;
            if (call < errnos.Length)
            {
                Marshal.SetLastPInvokeError(errnos[call]);
                return -1;
            }
            return success;
        }
    }

    /// <summary>A subclass only to reach the protected <c>Run</c> and <c>ICall</c>.</summary>
    private sealed class Probe : Syscalls
    {
        public static SyscallResult RunScript(Script script) => Run(new FakeCall(script));

        private readonly struct FakeCall(Script script) : ICall
        {
            public nint Invoke() => script.Next();
        }
    }
}
