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
                Assert.Equal(Count(before, $"splice-loop-{i}") + 1, Count(running, $"splice-loop-{i}"));
            }
            Assert.Equal(Count(before, $"splice-loop-{ThreadCount}"), Count(running, $"splice-loop-{ThreadCount}"));
        }

        // Disposing the host joins the loop threads.
        List<string> after = ThreadNames();
        for (int i = 0; i <= ThreadCount; i++)
        {
            Assert.Equal(Count(before, $"splice-loop-{i}"), Count(after, $"splice-loop-{i}"));
        }
    }
}
