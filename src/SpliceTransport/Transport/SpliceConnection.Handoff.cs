using SpliceTransport.Engine;
using SpliceTransport.Interop;
using SpliceTransport.Splice;
using SpliceTransport.Files;

namespace SpliceTransport.Transport;

/// <summary>
/// <see cref="ISocketHandoffFeature"/>: a byte path (an upload, a forwarder) borrows the socket from the pumps.
/// The connection's state machine does not change while it is borrowed: a shutdown still runs the one way out
/// (it cancels the readiness edges, which wakes the borrower), and the descriptor still closes only once both
/// pumps have ended, which a paused pump does only after it is resumed. So the borrower never sees its
/// descriptor closed under it.
/// </summary>
internal sealed partial class SpliceConnection : ISocketHandoffFeature
{
    /// <summary>Pauses the receive pump; on the loop, where the pump runs, so the two never race for the socket.</summary>
    public async Task<bool> PauseReceivingAsync(CancellationToken cancellationToken)
    {
        var requested = new TaskCompletionSource<Task<bool>>(TaskCreationOptions.RunContinuationsAsynchronously);
        RunOnLoop(static (connection, requested) =>
        {
            try
            {
                requested.TrySetResult(connection.IsShuttingDown || connection._state == ConnectionState.Created
                    ? Task.FromResult(false)
                    : connection._receivePump.PauseOnLoop());
            }
            catch (Exception ex)
            {
                requested.TrySetException(ex);
            }
        }, requested);
        Task<bool> stopped = await requested.Task.ConfigureAwait(false);
        return await AwaitPauseAsync(stopped, () => ResumeReceiving(), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The pump continues on the loop, reading at once, or ends with the failure (see <see cref="ReceivePump"/>);
    /// reads are watched again first, whatever the holder left.
    /// </summary>
    public void ResumeReceiving(SocketFailure? failure = null) =>
        RunOnLoop(static (connection, failure) =>
        {
            connection.WatchReadable(true);
            connection._receivePump.Gate.Resume(failure);
        }, failure);

    /// <summary>The current request's body reader and Content-Length as the first middleware saw them (HTTP/1.x: one request at a time).</summary>
    private (System.IO.Pipelines.PipeReader? Reader, long? ContentLength) _requestBodyAtStart;

    /// <inheritdoc />
    public void RecordRequestBodyAtStart(System.IO.Pipelines.PipeReader? bodyReader, long? contentLength) =>
        _requestBodyAtStart = (bodyReader, contentLength);

    /// <inheritdoc />
    public bool IsRequestBodyAsAtStart(System.IO.Pipelines.PipeReader bodyReader, long contentLength) =>
        _requestBodyAtStart is { Reader: { } reader, ContentLength: { } recorded } && ReferenceEquals(reader, bodyReader) && recorded == contentLength;

    /// <inheritdoc />
    public bool ZeroCopyUploads => _context.Options.ZeroCopyUploads;

    /// <summary>
    /// <see cref="IZeroCopyInputFeature"/>: the pump continues on the loop, into the segment first when there is one,
    /// with reads watched again.
    /// </summary>
    void IZeroCopyInputFeature.ResumeReceiving(ReceiveSegment? segment) =>
        RunOnLoop(static (connection, segment) =>
        {
            connection.WatchReadable(true);
            connection._receivePump.ResumeInto(segment);
        }, segment);

    /// <summary>False while a holder has told the loop to stop reporting reads (see <see cref="WatchReadable"/>).</summary>
    private bool _readsWatched = true;

    /// <inheritdoc />
    public void WatchReadable(bool watch)
    {
        if (_readsWatched == watch || IsShuttingDown)
        {
            return;
        }
        int errno = Loop.Modify(Socket, watch ? EventLoop.SocketEvents : EventLoop.SocketEvents & ~LibC.EPOLLIN);
        if (errno != 0 && watch)
        {
            // Unwatched reads would leave the holder waiting for an edge that cannot come.
            throw new SyscallException("epoll_ctl", errno, "EPOLL_CTL_MOD");
        }
        _readsWatched = watch || errno != 0; // A failure to narrow only costs wake-ups.
    }

    public Task<bool> PauseSendingAsync(CancellationToken cancellationToken)
    {
        if (IsShuttingDown || _state == ConnectionState.Created)
        {
            return Task.FromResult(false);
        }
        return AwaitPauseAsync(_sendPump.Pause(), () => ResumeSending(), cancellationToken);
    }

    /// <summary>The pump continues on the loop, or ends with the failure, which resets the connection.</summary>
    public void ResumeSending(SocketFailure? failure = null) =>
        RunOnLoop(static (connection, failure) => connection._sendPump.Gate.Resume(failure), failure);

    /// <inheritdoc />
    public event Action? ShuttingDown;

    /// <summary>Tells the holders of the socket that it is shutting down (<see cref="Shutdown"/>, on the loop).</summary>
    private void RaiseShuttingDown() => ShuttingDown?.Invoke();

    /// <summary>The transport's pipe pool, shared by every connection of the transport.</summary>
    public PipePool Pipes => _context.Pipes;

    /// <summary>The transport's disk threads.</summary>
    public DiskThreads DiskThreads => _context.DiskThreads;

    /// <summary>Waits for a pump to stop; a canceled wait withdraws the pause before it throws.</summary>
    private static async Task<bool> AwaitPauseAsync(Task<bool> stopped, Action withdraw, CancellationToken cancellationToken)
    {
        try
        {
            return await stopped.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            withdraw();
            throw;
        }
    }
}
