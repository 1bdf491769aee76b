using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Engine;
using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// Moves bytes from the socket into the connection's input pipe, on the loop thread.
/// It waits for readability before it rents a buffer, so an idle connection holds no buffer, and it stops
/// reading while the pipe is over <c>MaxReadBufferSize</c> (its flush does not complete), which pushes
/// back on the client through TCP's own window.
/// </summary>
internal sealed class ReceivePump
{
    /// <summary>The smallest buffer worth a recv call; Kestrel's socket transport asks for the same.</summary>
    private const int MinimumBufferSize = 2048;

    private readonly SpliceConnection _connection;
    private readonly PipeWriter _input;

    /// <summary>Where the pump waits now; loop thread only, like the pump itself.</summary>
    private Waiting _waiting;

    private enum Waiting
    {
        /// <summary>Running, or not started.</summary>
        None,

        /// <summary>For the socket's next readable edge.</summary>
        ForEdge,

        /// <summary>For the application to read the input below its limit (back-pressure).</summary>
        ForFlush,
    }

    public ReceivePump(SpliceConnection connection, PipeWriter input)
    {
        _connection = connection;
        _input = input;
    }

    /// <summary>Stops the pump for a holder of the socket (<see cref="ISocketHandoffFeature"/>).</summary>
    public PumpGate Gate { get; } = new();

    /// <summary>
    /// Asks the pump to stop before its next recv. Loop thread. A pump waiting for an edge is woken (one
    /// spurious edge: harmless, a waiter only ever retries the call) so that it parks at once and leaves the
    /// edge to the holder; an edge has one waiter. A pump waiting for the application to read will park after
    /// that, without reading, so the holder may go on now: it is usually the one about to read.
    /// </summary>
    public Task<bool> PauseOnLoop()
    {
        Task<bool> stopped = Gate.RequestPause();
        switch (_waiting)
        {
            case Waiting.ForEdge:
                _connection.Readiness.Readable.Signal();
                break;
            case Waiting.ForFlush:
                Gate.ReportStopped();
                break;
        }
        return stopped;
    }

    /// <summary>Runs until FIN, an error, the app completing the input, or the connection shutting down.</summary>
    public async Task RunAsync()
    {
        ReadinessEdge readable = _connection.Readiness.Readable;
        Exception? error = null;
        try
        {
            // No edge seen yet: the first wait lasts until the socket is readable (registration reports
            // data that is already there), so an idle connection never holds a buffer.
            int seen = 0;
            bool mayHaveMore = false;
            while (true)
            {
                if (_connection.IsShuttingDown)
                {
                    break;
                }
                // The gate before the edge, every turn: a pause granted while the pump waited for a flush
                // (PauseOnLoop) leaves the edge to the holder, who is then likely waiting on it. An edge has one
                // waiter, so a pump that went on to wait for it too would take the holder's wake-up (or lose its
                // own), and one of the two would hang.
                if (Gate.IsPauseRequested)
                {
                    if (await Gate.ParkAsync() is { } failure)
                    {
                        error = ReceiveError(failure.Result, failure.Syscall);
                        break;
                    }
                    // The holder may have taken the edge that announced what waits now (bytes, or the FIN),
                    // and no new one would come: read at once.
                    mayHaveMore = true;
                    continue;
                }
                if (!mayHaveMore)
                {
                    _waiting = Waiting.ForEdge;
                    await readable.WaitAsync(seen);
                    _waiting = Waiting.None;
                    mayHaveMore = true;
                    continue; // A shutdown or a pause may have come with the edge.
                }

                seen = readable.Observe();
                Memory<byte> buffer = _input.GetMemory(MinimumBufferSize);
                SyscallResult received = _connection.Syscalls.Receive(_connection.Socket, buffer.Span);
                if (received.WouldBlock)
                {
                    mayHaveMore = false;
                    continue;
                }
                if (!received.IsSuccess)
                {
                    error = ReceiveError(received, "recv");
                    break;
                }
                if (received.Count == 0)
                {
                    break; // FIN: the peer will send no more.
                }
                // A short read on a stream socket took everything that was queued; data arriving later
                // raises a new edge, so it counts as EAGAIN without paying for the extra call. A full buffer
                // may have left more behind. A FIN or reset that already came raises no new edge, though:
                // then read on until recv itself says 0, an error, or EAGAIN.
                mayHaveMore = received.Count == buffer.Length || _connection.Readiness.ReceiveEnded;

                _input.Advance((int)received.Count);
                _waiting = Waiting.ForFlush;
                FlushResult result = await _input.FlushAsync();
                _waiting = Waiting.None;
                if (result.IsCompleted || result.IsCanceled)
                {
                    break; // The application stopped reading, or the connection is shutting down.
                }
            }
        }
        catch (Exception ex)
        {
            error = ex;
            Log.ConnectionError(_connection.Logger, _connection.ConnectionId, ex);
        }
        finally
        {
            _waiting = Waiting.None;
            Gate.End();
            // A shutdown we started is the reason the pump ended, whatever recv said after it.
            _input.Complete(_connection.ShutdownReason ?? error);
        }
    }

    /// <summary>
    /// The exception the input completes with when <paramref name="syscall"/> failed on the socket: the pump's own
    /// recv, or a holder's splice handed back with the socket. A reset is logged as one (event 106).
    /// </summary>
    private Exception ReceiveError(SyscallResult result, string syscall)
    {
        SyscallException error = result.ToException(syscall);
        if (result.IsConnectionReset)
        {
            Log.ConnectionReset(_connection.Logger, _connection.ConnectionId);
            return new ConnectionResetException(error.Message, error);
        }
        Log.ConnectionError(_connection.Logger, _connection.ConnectionId, error);
        return error;
    }
}
