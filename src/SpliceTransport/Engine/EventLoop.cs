using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using SpliceTransport.Interop;

namespace SpliceTransport.Engine;

/// <summary>
/// One thread, one epoll instance, one wake-up eventfd, and a queue of work for the thread.
///
/// Triggering mode: edge-triggered (EPOLLET). Each descriptor is registered once, for EPOLLIN, EPOLLOUT and
/// EPOLLRDHUP together, and never modified again, so a send or receive costs no epoll_ctl. The price is the
/// edge-triggered contract: an event arrives only when readiness changes, so every handler either drives its
/// descriptor to EAGAIN or remembers that it is still ready (see <see cref="SocketReadiness"/>).
/// One-shot mode would make every wait an epoll_ctl(MOD): twice the system calls for a keep-alive request.
///
/// Invariant: every system call on a descriptor registered here, and every continuation of the pumps that
/// own it, runs on this loop's thread. That is what lets the pumps keep their state without locks.
/// The loop is also a <see cref="PipeScheduler"/>, so pipe continuations land back on its thread.
/// </summary>
internal sealed unsafe class EventLoop : PipeScheduler, IDisposable
{
    /// <summary>What a connected socket is registered for: reads, writes and the peer's FIN, all at once.</summary>
    public const uint SocketEvents = LibC.EPOLLIN | LibC.EPOLLOUT | LibC.EPOLLRDHUP;

    /// <summary>Events taken per epoll_wait; more only costs memory, fewer only costs calls.</summary>
    private const int MaxEventsPerWait = 256;

    /// <summary>The epoll data value of the wake-up eventfd; real registrations use the descriptor number.</summary>
    private const ulong WakeToken = ulong.MaxValue;

    /// <summary>
    /// Work items run per turn before the loop looks at epoll again, so a flood of scheduled continuations
    /// cannot starve socket events (and the other way round: events are handled in bounded batches too).
    /// </summary>
    private const int MaxWorkItemsPerTurn = 1024;

    /// <summary>How long a failed epoll_wait backs off before trying again (EINTR never reaches here: the seam retries it).</summary>
    private static readonly TimeSpan FailureBackoff = TimeSpan.FromMilliseconds(10);

    private readonly FileDescriptorHandle _epoll;
    private readonly FileDescriptorHandle _wakeEvent;
    private readonly ConcurrentQueue<WorkItem> _work = new();
    private readonly Thread _thread;
    private readonly ILogger _logger;
    private readonly Syscalls _syscalls;
    private IEpollHandler?[] _handlers = new IEpollHandler?[1024];

    /// <summary>
    /// 1 while the loop is awake (or a wake-up is already on its way): producers then only enqueue.
    /// 0 just before the loop blocks in epoll_wait: the next producer writes the eventfd.
    /// </summary>
    private int _awake = 1;

    /// <summary>One of <see cref="Running"/>, <see cref="Stopping"/>, <see cref="Stopped"/>; only ever increases.</summary>
    private int _state;

    private const int Running = 0;
    private const int Stopping = 1;
    private const int Stopped = 2;

    public EventLoop(int index, ILogger logger, Syscalls? syscalls = null)
    {
        Index = index;
        _logger = logger;
        _syscalls = syscalls ?? Syscalls.Default;
        _epoll = _syscalls.CreateEpoll().DescriptorOrThrow("epoll_create1");
        try
        {
            _wakeEvent = _syscalls.CreateWakeEvent().DescriptorOrThrow("eventfd");
            _syscalls.ControlEpoll(_epoll, LibC.EPOLL_CTL_ADD, _wakeEvent.Fd, LibC.EPOLLIN | LibC.EPOLLET, WakeToken).CountOrThrow("epoll_ctl", "eventfd");
        }
        catch
        {
            _wakeEvent?.Dispose();
            _epoll.Dispose();
            throw;
        }
        // Named so that /proc/<pid>/task/*/comm shows which threads are ours (15 characters at most there).
        _thread = new Thread(Run) { IsBackground = true, Name = $"splice-loop-{index}" };
        SendScheduler = new SendScheduler(this);
    }

    /// <summary>Where the send pumps of this loop's connections continue after a flush.</summary>
    public SendScheduler SendScheduler { get; }

    /// <summary>The loop's position in its group, for names and logs.</summary>
    public int Index { get; }

    /// <summary>True when called on this loop's thread.</summary>
    public bool IsOnLoopThread => Thread.CurrentThread == _thread;

    public void Start() => _thread.Start();

    /// <summary>True once the epoll instance and the eventfd are closed (for tests).</summary>
    internal bool DescriptorsClosed => _epoll.IsClosed && _wakeEvent.IsClosed;

    /// <summary>
    /// Runs <paramref name="action"/> on the loop thread, after the work already queued. Safe from any thread.
    /// After the loop has stopped the work runs on the thread pool instead: by then every connection of the
    /// loop is closed, so the work can only observe that and end, and dropping it would leave whoever awaits
    /// it hanging for ever.
    /// </summary>
    public override void Schedule(Action<object?> action, object? state)
    {
        _work.Enqueue(new WorkItem(action, state));
        // Invariant (with Run): the enqueue above is visible before _awake is read. Interlocked.Exchange is
        // a full fence on both sides, so either this producer sees 0 and wakes the loop, or the loop, which
        // wrote 0 with a full fence before looking at the queue, sees the item. A plain read here could be
        // satisfied before the enqueue is visible and lose the wake-up (Kestrel's IOQueue fences for this too).
        if (Interlocked.Exchange(ref _awake, 1) == 0)
        {
            Wake();
        }
        if (Volatile.Read(ref _state) == Stopped)
        {
            HandOverQueuedWork();
        }
    }

    /// <summary>Registers <paramref name="fd"/> edge-triggered for reads, writes and peer hang-ups. Loop thread only.</summary>
    public void Register(FileDescriptorHandle fd, IEpollHandler handler, uint events = SocketEvents)
    {
        Debug.Assert(IsOnLoopThread);
        int number = fd.Fd;
        if (number >= _handlers.Length)
        {
            Array.Resize(ref _handlers, Math.Max(number + 1, _handlers.Length * 2));
        }
        _handlers[number] = handler;
        SyscallResult added = _syscalls.ControlEpoll(_epoll, LibC.EPOLL_CTL_ADD, number, events | LibC.EPOLLET, (ulong)number);
        if (!added.IsSuccess)
        {
            _handlers[number] = null;
            throw added.ToException("epoll_ctl", "EPOLL_CTL_ADD");
        }
    }

    /// <summary>Registers a listening socket, edge-triggered, for incoming connections only. Loop thread only.</summary>
    public void RegisterListener(FileDescriptorHandle fd, IEpollHandler handler) => Register(fd, handler, LibC.EPOLLIN);

    /// <summary>
    /// Forgets <paramref name="fd"/>. Loop thread only, and before the descriptor is closed: a stale event for
    /// the number may still be in the current batch, and it then finds no handler (or a new connection's,
    /// which treats it as a spurious wake-up).
    /// </summary>
    public void Unregister(FileDescriptorHandle fd)
    {
        Debug.Assert(IsOnLoopThread);
        int number = fd.Fd;
        if (number < _handlers.Length)
        {
            _handlers[number] = null;
        }
        // Closing the descriptor removes it from the epoll set anyway; deleting first makes that immediate
        // even when a duplicate of the descriptor (an IConnectionSocketFeature user's) keeps the file open.
        // The result is not needed: ENOENT or EBADF say it is out of the set already, which is all this is for.
        _ = _syscalls.ControlEpoll(_epoll, LibC.EPOLL_CTL_DEL, number, 0, 0);
    }

    /// <summary>
    /// Changes the events a registered descriptor reports (EPOLL_CTL_MOD), edge-triggered as before. A readiness
    /// that holds already when the events are widened is reported at the loop's next wait, as an edge: the kernel
    /// checks it on the change. Loop thread only. Returns the errno, or 0.
    /// </summary>
    public int Modify(FileDescriptorHandle fd, uint events)
    {
        Debug.Assert(IsOnLoopThread);
        int number = fd.Fd;
        return _syscalls.ControlEpoll(_epoll, LibC.EPOLL_CTL_MOD, number, events | LibC.EPOLLET, (ulong)number).Errno;
    }

    /// <summary>An awaitable that continues on the loop thread after the work queued so far: a fair yield.</summary>
    public YieldAwaitable Yield() => new(this);

    private void Wake()
    {
        try
        {
            // The result is not needed: EAGAIN means the counter is already non-zero, so a wake-up is pending anyway.
            _ = _syscalls.SignalWakeEvent(_wakeEvent);
        }
        catch (ObjectDisposedException)
        {
            // The loop has stopped and closed the eventfd: nobody is left to wake (see Schedule).
        }
    }

    private void Run()
    {
        byte* events = stackalloc byte[MaxEventsPerWait * LibC.EpollEventSize];
        try
        {
            while (Volatile.Read(ref _state) == Running)
            {
                RunQueuedWork();

                bool mayBlock = false;
                if (_work.IsEmpty)
                {
                    // Invariant (with Schedule): the 0 is visible before the queue is read again. Exchange is a
                    // full fence, so a producer that enqueued after our look above either sees 0 and writes the
                    // eventfd, or its item is seen by the look below. Volatile.Write would allow the store to be
                    // delayed past the load, and the loop to block with work queued and no wake-up coming.
                    Interlocked.Exchange(ref _awake, 0);
                    mayBlock = _work.IsEmpty;
                }

                SyscallResult waited = mayBlock ? WaitForEvents(events) : _syscalls.WaitForEvents(_epoll, events, MaxEventsPerWait, 0);
                Volatile.Write(ref _awake, 1);
                if (!waited.IsSuccess)
                {
                    Log.EpollWaitFailed(_logger, Index, waited.ToException("epoll_wait"));
                    Thread.Sleep(FailureBackoff);
                    continue;
                }
                DispatchEvents(events, (int)waited.Count);
            }
            RunQueuedWork();
        }
        finally
        {
            // From here Schedule hands work to the thread pool; what was queued before this point is handed
            // over below. An item is dequeued once, whichever of the two takes it.
            Volatile.Write(ref _state, Stopped);
            HandOverQueuedWork();
            _epoll.Dispose();
            _wakeEvent.Dispose();
        }
    }

    private void DispatchEvents(byte* events, int count)
    {
        for (int i = 0; i < count; i++)
        {
            Syscalls.ReadEpollEvent(events, i, out uint flags, out ulong data);
            if (data == WakeToken)
            {
                DrainWakeEvent();
                continue;
            }
            IEpollHandler? handler = (int)data < _handlers.Length ? _handlers[(int)data] : null;
            if (handler is null)
            {
                continue;
            }
            try
            {
                handler.OnEvents(flags);
            }
            catch (Exception ex)
            {
                Log.HandlerFailed(_logger, Index, ex);
            }
        }
    }

    /// <summary>
    /// Blocks for events, but first gives the processor to whatever is runnable (typically the application
    /// threads this loop just handed requests to) and looks once more without blocking. On a busy core the
    /// loop then wakes once for a batch of events rather than once per arriving packet: side by side on one
    /// core this took context switches per request from about 1.3 to about 0.1. On an idle core the yield
    /// returns at once and costs two cheap system calls per transition to idle.
    /// </summary>
    private unsafe SyscallResult WaitForEvents(byte* events)
    {
        Thread.Yield();
        SyscallResult ready = _syscalls.WaitForEvents(_epoll, events, MaxEventsPerWait, 0);
        return ready.IsSuccess && ready.Count == 0 ? _syscalls.WaitForEvents(_epoll, events, MaxEventsPerWait, -1) : ready;
    }

    private void RunQueuedWork()
    {
        for (int i = 0; i < MaxWorkItemsPerTurn && _work.TryDequeue(out WorkItem item); i++)
        {
            try
            {
                item.Action(item.State);
            }
            catch (Exception ex)
            {
                Log.HandlerFailed(_logger, Index, ex);
            }
        }
    }

    /// <summary>The loop has stopped: whatever is still queued runs on the thread pool (see <see cref="Schedule"/>).</summary>
    private void HandOverQueuedWork()
    {
        while (_work.TryDequeue(out WorkItem item))
        {
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(item.Action, item.State, preferLocal: false);
        }
    }

    private void DrainWakeEvent()
    {
        // The result is not needed: the read only resets the counter, and EAGAIN means it was reset already.
        _ = _syscalls.ResetWakeEvent(_wakeEvent);
    }

    /// <summary>
    /// Stops the loop after the work already queued. From another thread it waits for the loop thread to
    /// end; on the loop thread itself (a handler disposing its own loop) it only asks, and the loop ends when
    /// the current turn does. The loop thread closes its own descriptors as it ends, so nothing it may still
    /// use is closed under it.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.CompareExchange(ref _state, Stopping, Running) != Running)
        {
            return;
        }
        if ((_thread.ThreadState & System.Threading.ThreadState.Unstarted) != 0)
        {
            // Never started: nothing runs the loop's exit path, so it runs here.
            Volatile.Write(ref _state, Stopped);
            HandOverQueuedWork();
            _epoll.Dispose();
            _wakeEvent.Dispose();
            return;
        }
        Interlocked.Exchange(ref _awake, 1);
        Wake();
        if (!IsOnLoopThread)
        {
            _thread.Join();
        }
    }

    private readonly record struct WorkItem(Action<object?> Action, object? State);

    /// <summary>Awaitable returned by <see cref="Yield"/>.</summary>
    public readonly struct YieldAwaitable(EventLoop loop) : ICriticalNotifyCompletion
    {
        public YieldAwaitable GetAwaiter() => this;
        public bool IsCompleted => false;
        public void GetResult() { }
        public void OnCompleted(Action continuation) => loop.Schedule(static state => ((Action)state!)(), continuation);
        public void UnsafeOnCompleted(Action continuation) => OnCompleted(continuation);
    }
}
