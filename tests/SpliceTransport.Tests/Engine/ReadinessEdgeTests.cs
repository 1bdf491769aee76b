using SpliceTransport.Engine;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Engine;

/// <summary>The counted edges a pump waits on after EAGAIN: no edge lost, cancellation final.</summary>
public class ReadinessEdgeTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(5);
    private readonly EventLoop _loop = new(0, new LogCollector().CreateLogger("test"));

    public ReadinessEdgeTests() => _loop.Start();

    public void Dispose() => _loop.Dispose();

    [Fact]
    public async Task AnEdgeThatArrivedAfterTheObservationCompletesTheWaitAtOnce()
    {
        var edge = new ReadinessEdge(_loop);
        int seen = edge.Observe();
        await OnLoopAsync(edge.Signal); // The edge comes while the "system call" runs.
        Assert.True(edge.WaitAsync(seen).IsCompleted);
    }

    [Fact]
    public async Task AWaitWithNoNewEdgeWaitsUntilTheNextOne()
    {
        var edge = new ReadinessEdge(_loop);
        int seen = edge.Observe();
        Assert.False(edge.WaitAsync(seen).IsCompleted);
        Task waiting = WaitAsync(edge, seen);
        await OnLoopAsync(() => { }); // A turn of the loop with no edge in it: the wait must still be waiting.
        Assert.False(waiting.IsCompleted);
        await OnLoopAsync(edge.Signal);
        await waiting.WaitAsync(Deadline);
    }

    [Fact]
    public async Task CancelCompletesTheWaiterAndEveryLaterWait()
    {
        var edge = new ReadinessEdge(_loop);
        int seen = edge.Observe();
        Task waiting = WaitAsync(edge, seen);
        await OnLoopAsync(edge.Cancel);
        await waiting.WaitAsync(Deadline);
        // Cancellation is sticky: a wait that starts later, with the newest count, does not block either.
        Assert.True(edge.WaitAsync(edge.Observe()).IsCompleted);
    }

    /// <summary>Signals racing with registrations from another thread: every wait ends, none twice.</summary>
    [Fact]
    public async Task SignalsRacingWithWaitersLoseNoEdge()
    {
        const int Rounds = 20_000;
        var edge = new ReadinessEdge(_loop);
        int resumed = 0;
        for (int round = 0; round < Rounds; round++)
        {
            int seen = edge.Observe();
            var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            ReadinessEdge.EdgeAwaiter awaiter = edge.WaitAsync(seen).GetAwaiter();
            if (awaiter.IsCompleted)
            {
                Interlocked.Increment(ref resumed);
                waiting.SetResult();
            }
            else
            {
                // The continuation itself, counted: an edge that resumed its waiter twice would count two.
                awaiter.UnsafeOnCompleted(() =>
                {
                    Interlocked.Increment(ref resumed);
                    waiting.TrySetResult();
                });
            }
            _loop.Schedule(static state => ((ReadinessEdge)state!).Signal(), edge);
            await waiting.Task.WaitAsync(Deadline);
        }
        // A late second resume of the last waiter would come with the loop's next turn: wait for one to pass.
        await OnLoopAsync(() => { });
        Assert.Equal(Rounds, Volatile.Read(ref resumed));
    }

    private static async Task WaitAsync(ReadinessEdge edge, int seen) => await edge.WaitAsync(seen);

    private Task OnLoopAsync(Action action)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _loop.Schedule(_ =>
        {
            action();
            done.SetResult();
        }, null);
        return done.Task.WaitAsync(Deadline);
    }
}
