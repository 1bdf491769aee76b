using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
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

    public ReceivePump(SpliceConnection connection, PipeWriter input)
    {
        _connection = connection;
        _input = input;
    }

    private unsafe nint Receive(Span<byte> buffer)
    {
        fixed (byte* bytes = buffer)
        {
            return LibC.recv(_connection.Socket, bytes, (nuint)buffer.Length, 0);
        }
    }

    /// <summary>Runs until FIN, an error, the app completing the input, or the connection closing.</summary>
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
                if (!mayHaveMore)
                {
                    await readable.WaitAsync(seen);
                }
                if (_connection.Readiness.IsCanceled)
                {
                    break;
                }

                seen = readable.Observe();
                Memory<byte> buffer = _input.GetMemory(MinimumBufferSize);
                nint received = Receive(buffer.Span);
                if (received < 0)
                {
                    int errno = LibC.LastErrno;
                    if (errno == Errno.EAGAIN || errno == Errno.EINTR)
                    {
                        mayHaveMore = errno == Errno.EINTR;
                        continue;
                    }
                    throw new SyscallException("recv", errno);
                }
                if (received == 0)
                {
                    break; // FIN: the peer will send no more.
                }
                // A short read on a stream socket took everything that was queued; data arriving later
                // raises a new edge, so it counts as EAGAIN without paying for the extra call. A full buffer
                // may have left more behind. A FIN or reset that already came raises no new edge, though:
                // then read on until recv itself says 0, an error, or EAGAIN.
                mayHaveMore = received == buffer.Length || _connection.Readiness.ReceiveEnded;

                _input.Advance((int)received);
                FlushResult result = await _input.FlushAsync();
                if (result.IsCompleted || result.IsCanceled)
                {
                    break; // The application stopped reading, or the connection is closing.
                }
            }
        }
        catch (SyscallException ex) when (Errno.IsConnectionReset(ex.Errno))
        {
            error = new ConnectionResetException(ex.Message, ex);
            Log.ConnectionReset(_connection.Logger, _connection.ConnectionId);
        }
        catch (Exception ex)
        {
            error = ex;
            Log.ConnectionError(_connection.Logger, _connection.ConnectionId, ex);
        }
        finally
        {
            // A shutdown we started is the reason the pump ended, whatever recv said after it.
            _input.Complete(_connection.AbortReason ?? error);
        }
    }
}
