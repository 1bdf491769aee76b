using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>The event loops are named threads, visible in /proc, and they end with the host.</summary>
[Collection(ProcessWideCollection.Name)]
public class EventLoopThreadTests
{
    private const int ThreadCount = 3;

    /// <summary>The names of this process's threads, as /proc/self/task/*/comm shows them.</summary>
    private static List<string> ThreadNames()
    {
        var names = new List<string>();
        foreach (string task in Directory.GetDirectories("/proc/self/task"))
        {
            try
            {
                names.Add(File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n'));
            }
            catch (IOException)
            {
                // The thread ended between the listing and the read.
            }
        }
        return names;
    }

    private static int Count(List<string> names, string name) => names.Count(n => n == name);

    [Fact]
    public async Task LoopThreadsAreNamedAndEndWithTheHost()
    {
        List<string> before = ThreadNames();
        await using (var host = await SpliceTestHost.StartAsync(app => app.MapGet("/", () => "ok"), o => o.ThreadCount = ThreadCount))
        {
            using var client = host.CreateClient();
            using var response = await client.GetAsync("/");
            TransportAssert.ServedBySplice(response);

            List<string> running = ThreadNames();
            for (int i = 0; i < ThreadCount; i++)
            {
                // Exactly one more of each: this host's loops (other hosts of this collection are disposed).
                Assert.True(Count(before, $"splice-loop-{i}") + 1 == Count(running, $"splice-loop-{i}"), $"splice-loop-{i}: {Count(before, $"splice-loop-{i}")} before, {Count(running, $"splice-loop-{i}")} running.");
            }
            Assert.True(Count(before, $"splice-loop-{ThreadCount}") == Count(running, $"splice-loop-{ThreadCount}"), $"A splice-loop-{ThreadCount} thread appeared for ThreadCount = {ThreadCount}.");
        }

        // Disposing the host joins the loop threads; the kernel may list an exiting thread a moment longer.
        string[] Left()
        {
            List<string> after = ThreadNames();
            return Enumerable.Range(0, ThreadCount + 1).Select(i => $"splice-loop-{i}")
                .Where(name => Count(after, name) != Count(before, name)).ToArray();
        }
        await Poll.EventuallyAsync(() => Left().Length == 0,
            () => "the loop threads to end after the host was disposed; still running: " + string.Join(", ", Left()), TimeSpan.FromSeconds(10));
    }
}
