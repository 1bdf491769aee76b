using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using SpliceTransport.Interop;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;
using Xunit.Abstractions;

namespace SpliceTransport.Tests.FaultInjection;

/// <summary>
/// accept4 running out of descriptors (EMFILE): the pending connection stays in the backlog, each failure is
/// logged, and the acceptor tries again after its 50 ms delay (not at once, which would spin the loop) until
/// the real call takes the connection and the request is served.
/// </summary>
public class AcceptFailureTests(ITestOutputHelper output)
{
    private const int AcceptResourcesExhausted = 104;

    private static Task<SpliceTestHost> StartAsync(FaultInjectingSyscalls syscalls) =>
        FaultKit.StartAsync(syscalls, app => app.MapGet("/plaintext", () => "Hello, World!"));

    [Fact]
    public async Task ThreeEmfileFailuresThenTheRequestIsServed()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using SpliceTestHost host = await StartAsync(syscalls);
        using (HttpClient warmUp = host.CreateClient())
        {
            // The first request pays for JIT and Kestrel's start-up; the measured one must not.
            Assert.Equal("Hello, World!", await warmUp.GetStringAsync("/plaintext").WaitAsync(Waits.Short));
        }
        var clock = Stopwatch.StartNew();
        var calls = new ConcurrentQueue<long>();
        syscalls.ArmAcceptFault(call =>
        {
            calls.Enqueue(clock.ElapsedMilliseconds);
            return call <= 3 ? SyscallResult.Failure(Errno.EMFILE) : null;
        });

        using (HttpClient client = host.CreateClient())
        {
            using HttpResponseMessage response = await client.GetAsync("/plaintext").WaitAsync(Waits.Short);
            clock.Stop();
            TransportAssert.ServedBySplice(response);
            Assert.Equal("Hello, World!", await response.Content.ReadAsStringAsync().WaitAsync(Waits.Short));
        }
        output.WriteLine($"served after {clock.ElapsedMilliseconds} ms; accept calls at {string.Join(", ", calls)} ms");

        Assert.Equal(3, syscalls.InjectedFaults);
        // Three retries 50 ms apart: not at once (a spinning loop), and well within two seconds.
        Assert.InRange(clock.Elapsed, TimeSpan.FromMilliseconds(90), TimeSpan.FromSeconds(2));
        List<LogCollector.Entry> exhausted = host.Logs.Entries.Where(e => e.EventId.Id == AcceptResourcesExhausted).ToList();
        Assert.Equal(3, exhausted.Count);
        Assert.All(exhausted, e =>
        {
            Assert.Equal("AcceptResourcesExhausted", e.EventId.Name);
            Assert.Equal(LogLevel.Error, e.Level);
            Assert.Contains("EMFILE", e.Exception?.Message, StringComparison.Ordinal);
        });
        AssertNoOtherErrors(host);
        Assert.Equal(2, host.Metrics.AcceptedConnections);
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
    }

    /// <summary>EMFILE answers before the descriptor is "free" again: enough to see the pace of the retries.</summary>
    private const int RetriesBeforeRecovery = 5;

    [Fact]
    public async Task LastingEmfileRetriesAtAPaceAndRecovers()
    {
        // EMFILE for half a second: the acceptor retries about every 50 ms (never a busy loop, never stacked
        // timers), then takes the connection as soon as a descriptor is "free" again.
        var syscalls = new FaultInjectingSyscalls();
        await using SpliceTestHost host = await StartAsync(syscalls);
        int exhausted = 1;
        syscalls.ArmAcceptFault(_ => Volatile.Read(ref exhausted) == 1 ? SyscallResult.Failure(Errno.EMFILE) : null);

        using HttpClient client = host.CreateClient();
        var window = Stopwatch.StartNew();
        Task<HttpResponseMessage> request = client.GetAsync("/plaintext");
        // Until the acceptor has retried a few times (not a fixed window: a slow machine would retry less in it).
        await Poll.EventuallyAsync(() => syscalls.InjectedFaults >= RetriesBeforeRecovery, () => $"{RetriesBeforeRecovery} accept retries", Waits.Short);
        Volatile.Write(ref exhausted, 0);
        long failures = syscalls.InjectedFaults;
        long windowMs = window.ElapsedMilliseconds;
        using HttpResponseMessage response = await request.WaitAsync(Waits.Short);
        Assert.Equal("Hello, World!", await response.Content.ReadAsStringAsync().WaitAsync(Waits.Short));
        output.WriteLine($"{failures} EMFILE failures in {windowMs} ms");

        // Retried, and at a pace: at most one try per 25 ms on average (the delay is 50 ms), however slow the
        // machine made the window.
        Assert.InRange(failures, RetriesBeforeRecovery, RetriesBeforeRecovery + (windowMs / 25));
        Assert.Equal(failures, host.Logs.Entries.Count(e => e.EventId.Id == AcceptResourcesExhausted));
        AssertNoOtherErrors(host);
    }

    private static void AssertNoOtherErrors(SpliceTestHost host)
    {
        var errors = host.Logs.AtLeast(LogLevel.Error).Where(e => e.EventId.Id != AcceptResourcesExhausted).ToList();
        Assert.True(errors.Count == 0, "Errors were logged:\n" + string.Join("\n", errors));
    }
}
