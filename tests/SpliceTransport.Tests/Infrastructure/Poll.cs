using System.Diagnostics;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>
/// The one way the tests wait for something that happens on the server's own time (a count recorded just after the
/// response leaves, a descriptor closed after the last byte): look again until it holds or the time is up. A test
/// that waits for an event it can observe (a response, a log line, a completed task) waits for that instead.
/// </summary>
internal static class Poll
{
    /// <summary>How often a condition is looked at: often enough not to slow a test, rarely enough not to load the machine.</summary>
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(20);

    /// <summary>Looks at <paramref name="condition"/> until it holds or <paramref name="timeout"/> has passed; says whether it held.</summary>
    public static async Task<bool> UntilAsync(Func<bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout)
            {
                return false;
            }
            await Task.Delay(Interval);
        }
        return true;
    }

    /// <summary>Fails the test, saying what was awaited, when <paramref name="condition"/> does not hold within <paramref name="timeout"/>.</summary>
    public static async Task EventuallyAsync(Func<bool> condition, Func<string> what, TimeSpan timeout)
    {
        if (!await UntilAsync(condition, timeout))
        {
            Assert.Fail($"Timed out after {timeout.TotalSeconds:F0} s waiting for: {what()}");
        }
    }
}
