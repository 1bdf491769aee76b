namespace SpliceTransport.Transport;

/// <summary>
/// A pump's pause switch, for a byte path that takes the socket from the pump for a while
/// (<see cref="ISocketHandoffFeature"/>). The holder asks (<see cref="RequestPause"/>); the pump stops at its
/// next safe point (the receive pump before a recv, the send pump with nothing left to send), reports that it
/// has stopped, and waits there (<see cref="ParkAsync"/>) until <see cref="Resume"/>. One pause at a time.
///
/// Threads: the holder may ask and resume from any thread; the pump parks on its own. The pump continues on
/// the thread that resumes it (the connection resumes on its loop thread), so the resumption must not be
/// asynchronous: the pump's next step belongs on the loop.
/// </summary>
internal sealed class PumpGate
{
    private readonly object _lock = new();

    /// <summary>Completes true when the pump has stopped for the holder, false when it ended instead.</summary>
    private TaskCompletionSource<bool>? _stopped;

    /// <summary>
    /// Completes when the holder gives the socket back, with the failure it met on the socket, if any.
    /// Continuations run inline: on the resuming thread.
    /// </summary>
    private TaskCompletionSource<SocketFailure?>? _resumed;

    private volatile bool _requested;
    private bool _ended;

    /// <summary>True from <see cref="RequestPause"/> to <see cref="Resume"/>: the pump must stop at its next safe point.</summary>
    public bool IsPauseRequested => _requested;

    /// <summary>
    /// Asks the pump to stop. The task completes true once the pump has stopped (or <see cref="ReportStopped"/>
    /// says it is somewhere it will not touch the socket before parking), false if the pump has ended.
    /// </summary>
    public Task<bool> RequestPause()
    {
        lock (_lock)
        {
            if (_ended)
            {
                return Task.FromResult(false);
            }
            if (_stopped is not null)
            {
                throw new InvalidOperationException("The socket is already handed off in this direction: resume it before pausing again.");
            }
            _stopped = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            _resumed = new TaskCompletionSource<SocketFailure?>();
            _requested = true;
            return _stopped.Task;
        }
    }

    /// <summary>
    /// The pump will not touch the socket before it parks (it waits for something else first): the holder may
    /// go on. No-op when no pause is asked for.
    /// </summary>
    public void ReportStopped()
    {
        TaskCompletionSource<bool>? stopped;
        lock (_lock)
        {
            stopped = _stopped;
        }
        stopped?.TrySetResult(true);
    }

    /// <summary>
    /// The pump, at its safe point with a pause asked for: reports it stopped and waits for the resume. The task's
    /// result is the failure the holder handed back (<see cref="Resume"/>): the pump then ends as if its own
    /// system call had said it; null means go on.
    /// </summary>
    public Task<SocketFailure?> ParkAsync()
    {
        TaskCompletionSource<bool>? stopped;
        Task<SocketFailure?> resumed;
        lock (_lock)
        {
            stopped = _stopped;
            resumed = _resumed?.Task ?? s_notPaused; // Resumed between the check and here: go on.
        }
        stopped?.TrySetResult(true);
        return resumed;
    }

    private static readonly Task<SocketFailure?> s_notPaused = Task.FromResult<SocketFailure?>(null);

    /// <summary>
    /// Gives the socket back (or withdraws a pause not yet granted): the parked pump continues on this thread.
    /// With a <paramref name="failure"/> (the holder's splice met a reset, say) the pump ends with it, as if its own
    /// call had failed: a socket reports a reset once, so the pump could not learn it by itself. No-op when
    /// nothing is paused.
    /// </summary>
    public void Resume(SocketFailure? failure = null)
    {
        TaskCompletionSource<bool>? stopped;
        TaskCompletionSource<SocketFailure?>? resumed;
        lock (_lock)
        {
            stopped = _stopped;
            resumed = _resumed;
            _stopped = null;
            _resumed = null;
            _requested = false;
        }
        // A pause withdrawn before the pump stopped: its waiter learns it was not granted.
        stopped?.TrySetResult(false);
        resumed?.TrySetResult(failure);
    }

    /// <summary>The pump has ended: a pending pause completes false, and later ones at once.</summary>
    public void End()
    {
        TaskCompletionSource<bool>? stopped;
        lock (_lock)
        {
            _ended = true;
            stopped = _stopped;
        }
        stopped?.TrySetResult(false);
    }
}
