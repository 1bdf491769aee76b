using Microsoft.Extensions.Logging;

namespace SpliceTransport.Engine;

/// <summary>The transport's event loops, started together and handed out round-robin.</summary>
internal sealed class EventLoopGroup : IDisposable
{
    private readonly EventLoop[] _loops;
    private int _next = -1;

    public EventLoopGroup(int threadCount, ILogger logger, Interop.Syscalls? syscalls = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threadCount);
        _loops = new EventLoop[threadCount];
        try
        {
            for (int i = 0; i < threadCount; i++)
            {
                _loops[i] = new EventLoop(i, logger, syscalls);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        foreach (EventLoop loop in _loops)
        {
            loop.Start();
        }
        Log.LoopsStarted(logger, threadCount);
    }

    public IReadOnlyList<EventLoop> Loops => _loops;

    /// <summary>The next loop in round-robin order, for connections handed out by a single acceptor.</summary>
    public EventLoop Next() => _loops[(int)((uint)Interlocked.Increment(ref _next) % (uint)_loops.Length)];

    public void Dispose()
    {
        foreach (EventLoop? loop in _loops)
        {
            loop?.Dispose();
        }
    }
}
