using SpliceTransport.Transport;
using SpliceTransport.Files;

namespace SpliceTransport.Tests.Unit;

/// <summary>
/// The threads cold file chunks are read on: never the thread pool's (whose workers serve requests), never more
/// than their cap, and a read's continuation never on the reader thread.
/// </summary>
public class DiskThreadsTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task AReadRunsOnAThreadOfItsOwnAndContinuesOnThePool()
    {
        using var threads = new DiskThreads();

        // The read waits until its continuation is attached: one attached to a finished task would run here.
        using var attached = new ManualResetEventSlim(false);
        Task<((string? Name, bool IsPoolThread, int Id), (bool IsPoolThread, int Id))> done = threads.RunAsync(() =>
            {
                attached.Wait(Wait);
                return (Name: Thread.CurrentThread.Name, IsPoolThread: Thread.CurrentThread.IsThreadPoolThread, Id: Environment.CurrentManagedThreadId);
            })
            // Synchronously: where the read's completion runs its continuations.
            .ContinueWith(read => (read.Result, (IsPoolThread: Thread.CurrentThread.IsThreadPoolThread, Id: Environment.CurrentManagedThreadId)),
                CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        attached.Set();
        var (reader, continuation) = await done.WaitAsync(Wait);

        Assert.StartsWith("splice-disk-", reader.Name);
        Assert.False(reader.IsPoolThread);
        Assert.True(continuation.IsPoolThread, "The continuation should run on the thread pool.");
        Assert.NotEqual(reader.Id, continuation.Id);
    }

    [Fact]
    public async Task BlockedReadsStartAtMostTheCapOfThreadsAndTheRestWaitTheirTurn()
    {
        using var threads = new DiskThreads();
        using var disk = new ManualResetEventSlim(false);
        int running = 0, mostAtOnce = 0;
        int reads = DiskThreads.MaxThreads + 8;

        Task<int>[] tasks = Enumerable.Range(0, reads).Select(i => threads.RunAsync(() =>
        {
            int now = Interlocked.Increment(ref running);
            InterlockedMax(ref mostAtOnce, now);
            disk.Wait(Wait); // A disk that answers nobody until the test lets it.
            Interlocked.Decrement(ref running);
            return i;
        })).ToArray();

        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref running) == DiskThreads.MaxThreads, Wait),
            $"{Volatile.Read(ref running)} reads running, expected {DiskThreads.MaxThreads}.");
        Assert.All(tasks, task => Assert.False(task.IsCompleted));
        disk.Set();

        int[] results = await Task.WhenAll(tasks).WaitAsync(Wait);
        Assert.Equal(Enumerable.Range(0, reads), results);
        Assert.Equal(DiskThreads.MaxThreads, threads.ThreadCount);
        Assert.Equal(DiskThreads.MaxThreads, Volatile.Read(ref mostAtOnce));
    }

    [Fact]
    public async Task AnIdleThreadTakesTheNextReadInsteadOfANewThread()
    {
        using var threads = new DiskThreads();
        for (int i = 0; i < 20; i++)
        {
            await threads.RunAsync(() => 0).WaitAsync(Wait);
            Assert.True(SpinWait.SpinUntil(() => threads.IdleThreadCount == 1, Wait), "The reader did not go back to waiting.");
        }
        Assert.Equal(1, threads.ThreadCount);
    }

    [Fact]
    public async Task AReadThatThrowsFaultsItsTaskAndTheThreadServesTheNext()
    {
        using var threads = new DiskThreads();

        var error = await Assert.ThrowsAsync<IOException>(() => threads.RunAsync<int>(() => throw new IOException("EIO")).WaitAsync(Wait));
        Assert.Equal("EIO", error.Message);
        Assert.Equal(7, await threads.RunAsync(() => 7).WaitAsync(Wait));
    }

    [Fact]
    public async Task AfterDisposeQueuedReadsFinishAndNewOnesAreRefused()
    {
        var threads = new DiskThreads();
        using var disk = new ManualResetEventSlim(false);
        Task<int> queued = threads.RunAsync(() => disk.Wait(Wait) ? 1 : 0);

        threads.Dispose();
        Assert.Throws<ObjectDisposedException>(() => { _ = threads.RunAsync(() => 2); });
        disk.Set();

        Assert.Equal(1, await queued.WaitAsync(Wait));
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int current;
        while (value > (current = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, current) != current)
        {
        }
    }
}
