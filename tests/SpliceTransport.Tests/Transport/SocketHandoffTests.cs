using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using SpliceTransport.Engine;
using SpliceTransport.Interop;
using SpliceTransport.Tests.Infrastructure;
using SpliceTransport.Transport;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// <see cref="ISocketHandoffFeature"/> on real connections: a connection middleware takes the socket from the
/// pumps, moves bytes on it directly, and gives it back; nothing is lost, duplicated or reordered.
/// </summary>
public sealed class SocketHandoffTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_paused_receive_pump_leaves_the_socket_to_the_holder_and_reads_at_once_when_resumed()
    {
        const int directBytes = 3 * 1024 * 1024 + 7;
        byte[] direct = RandomNumberGenerator.GetBytes(directBytes);
        var outcome = new TaskCompletionSource<(byte[] Direct, bool PipeStayedEmpty, string Tail)>(TaskCreationOptions.RunContinuationsAsynchronously);

        await using var host = await StartAsync(async connection =>
        {
            var handoff = connection.Features.Get<ISocketHandoffFeature>()!;
            Assert.Equal("HELLO\n", await ReadLineAsync(connection.Transport.Input));
            Assert.True(await handoff.PauseReceivingAsync(CancellationToken.None));
            byte[] received;
            bool pipeStayedEmpty;
            try
            {
                await WriteAsync(connection.Transport.Output, "P");
                received = await ReceiveExactlyAsync(handoff, directBytes);
                // The client sent TAIL right behind: it waits in the socket, not in the pipe.
                await Task.Delay(100);
                pipeStayedEmpty = !connection.Transport.Input.TryRead(out _);
            }
            finally
            {
                handoff.ResumeReceiving();
            }
            string tail = await ReadLineAsync(connection.Transport.Input);
            outcome.TrySetResult((received, pipeStayedEmpty, tail));
            await WriteAsync(connection.Transport.Output, "DONE");
        });

        using Socket client = await ConnectAsync(host.Port);
        await client.SendAsync(Encoding.ASCII.GetBytes("HELLO\n"));
        Assert.Equal("P", await ReceiveTextAsync(client, 1));
        await client.SendAsync(direct.Concat(Encoding.ASCII.GetBytes("TAIL\n")).ToArray());

        var (received, pipeStayedEmpty, tail) = await outcome.Task.WaitAsync(Timeout);
        Assert.Equal(SHA256.HashData(direct), SHA256.HashData(received));
        Assert.True(pipeStayedEmpty, "The receive pump read the socket while it was paused.");
        Assert.Equal("TAIL\n", tail);
        Assert.Equal("DONE", await ReceiveTextAsync(client, 4));
    }

    [Fact]
    public async Task A_paused_send_pump_has_sent_everything_before_the_pause_and_sends_again_when_resumed()
    {
        // More than loopback's socket buffers hold while the client does not read, so the pause must wait.
        byte[] queued = RandomNumberGenerator.GetBytes(16 * 1024 * 1024);
        byte[] directBytes = Encoding.ASCII.GetBytes("DIRECT");
        byte[] afterBytes = Encoding.ASCII.GetBytes("AFTER");

        await using var host = await StartAsync(async connection =>
        {
            var handoff = connection.Features.Get<ISocketHandoffFeature>()!;
            ValueTask<FlushResult> flush = connection.Transport.Output.WriteAsync(queued);
            Assert.True(await handoff.PauseSendingAsync(CancellationToken.None));
            try
            {
                // At once, not after the flush: the pause alone must guarantee that the queued bytes have left.
                await SendExactlyAsync(handoff, directBytes);
            }
            finally
            {
                handoff.ResumeSending();
            }
            await flush;
            await connection.Transport.Output.WriteAsync(afterBytes);
            await connection.Transport.Output.CompleteAsync();
        });

        using Socket client = await ConnectAsync(host.Port);
        await Task.Delay(300); // Let the output back up while nobody reads.
        byte[] all = await ReceiveToEndAsync(client);
        byte[] expected = [.. queued, .. directBytes, .. afterBytes];
        Assert.Equal(expected.Length, all.Length);
        Assert.Equal(SHA256.HashData(expected), SHA256.HashData(all));
    }

    [Fact]
    public async Task A_send_pause_that_is_canceled_is_withdrawn_and_the_output_flows_on()
    {
        byte[] queued = RandomNumberGenerator.GetBytes(16 * 1024 * 1024);
        var pauseOutcome = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);

        await using var host = await StartAsync(async connection =>
        {
            var handoff = connection.Features.Get<ISocketHandoffFeature>()!;
            ValueTask<FlushResult> flush = connection.Transport.Output.WriteAsync(queued);
            try
            {
                // The client is not reading: the queued bytes cannot all leave, so the pause is not granted.
                await handoff.PauseSendingAsync(new CancellationTokenSource(TimeSpan.FromMilliseconds(300)).Token);
                pauseOutcome.TrySetResult(null);
            }
            catch (Exception ex)
            {
                pauseOutcome.TrySetResult(ex);
            }
            await flush;
            await connection.Transport.Output.WriteAsync(Encoding.ASCII.GetBytes("END"));
            await connection.Transport.Output.CompleteAsync();
        });

        using Socket client = await ConnectAsync(host.Port);
        Assert.IsAssignableFrom<OperationCanceledException>(await pauseOutcome.Task.WaitAsync(Timeout));
        byte[] all = await ReceiveToEndAsync(client);
        byte[] expected = [.. queued, .. Encoding.ASCII.GetBytes("END")];
        Assert.Equal(SHA256.HashData(expected), SHA256.HashData(all));
    }

    [Fact]
    public async Task A_FIN_whose_edge_the_holder_took_still_ends_the_input_after_the_resume()
    {
        var inputEnded = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);

        await using var host = await StartAsync(async connection =>
        {
            var handoff = connection.Features.Get<ISocketHandoffFeature>()!;
            Assert.Equal("HELLO\n", await ReadLineAsync(connection.Transport.Input));
            ReadinessEdge readable = handoff.Readiness.Readable;
            int seen = readable.Observe();
            Assert.True(await handoff.PauseReceivingAsync(CancellationToken.None));
            try
            {
                await WriteAsync(connection.Transport.Output, "P");
                // The FIN's edge comes to the holder, who does not read it (the pause's own wake-up may
                // come first: wait until the readiness says the peer has finished).
                while (!handoff.Readiness.ReceiveEnded)
                {
                    await readable.WaitAsync(seen);
                    seen = readable.Observe();
                }
            }
            finally
            {
                handoff.ResumeReceiving();
            }
            while (true)
            {
                ReadResult result = await connection.Transport.Input.ReadAsync();
                connection.Transport.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    inputEnded.TrySetResult(result.Buffer.IsEmpty);
                    break;
                }
            }
        });

        using Socket client = await ConnectAsync(host.Port);
        await client.SendAsync(Encoding.ASCII.GetBytes("HELLO\n"));
        Assert.Equal("P", await ReceiveTextAsync(client, 1));
        client.Shutdown(SocketShutdown.Send);
        Assert.True(await inputEnded.Task.WaitAsync(Timeout));
    }

    [Fact]
    public async Task Pausing_a_receive_side_that_has_ended_says_false()
    {
        var outcome = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);

        await using var host = await StartAsync(async connection =>
        {
            var handoff = connection.Features.Get<ISocketHandoffFeature>()!;
            while (true)
            {
                ReadResult result = await connection.Transport.Input.ReadAsync();
                connection.Transport.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
            outcome.TrySetResult(await handoff.PauseReceivingAsync(CancellationToken.None));
        });

        using Socket client = await ConnectAsync(host.Port);
        await client.SendAsync(Encoding.ASCII.GetBytes("X"));
        client.Shutdown(SocketShutdown.Send);
        Assert.False(await outcome.Task.WaitAsync(Timeout));
    }

    [Fact]
    public async Task A_second_pause_in_the_same_direction_is_refused_by_name()
    {
        var outcome = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);

        await using var host = await StartAsync(async connection =>
        {
            var handoff = connection.Features.Get<ISocketHandoffFeature>()!;
            Assert.True(await handoff.PauseReceivingAsync(CancellationToken.None));
            try
            {
                await handoff.PauseReceivingAsync(CancellationToken.None);
                outcome.TrySetResult(null);
            }
            catch (Exception ex)
            {
                outcome.TrySetResult(ex);
            }
            finally
            {
                handoff.ResumeReceiving();
            }
            await WriteAsync(connection.Transport.Output, "OK");
        });

        using Socket client = await ConnectAsync(host.Port);
        var error = Assert.IsType<InvalidOperationException>(await outcome.Task.WaitAsync(Timeout));
        Assert.Contains("already handed off", error.Message);
        Assert.Equal("OK", await ReceiveTextAsync(client, 2));
    }

    [Fact]
    public async Task An_abort_wakes_a_holder_waiting_on_the_socket_and_the_connection_closes_after_the_resume()
    {
        var holderWoke = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);

        await using var host = await StartAsync(async connection =>
        {
            var handoff = connection.Features.Get<ISocketHandoffFeature>()!;
            Assert.True(await handoff.PauseReceivingAsync(CancellationToken.None));
            try
            {
                ReadinessEdge readable = handoff.Readiness.Readable;
                int seen = readable.Observe();
                _ = Task.Run(async () =>
                {
                    await Task.Delay(200);
                    connection.Abort(new ConnectionAbortedException("test abort"));
                });
                // The client sends nothing: only the abort can end this wait.
                while (!handoff.IsShuttingDown)
                {
                    await readable.WaitAsync(seen);
                    seen = readable.Observe();
                }
                holderWoke.TrySetResult(true);
            }
            finally
            {
                handoff.ResumeReceiving();
            }
        });

        using Socket client = await ConnectAsync(host.Port);
        Assert.True(await holderWoke.Task.WaitAsync(Timeout));
        // The abort resets the connection: the client sees the end (0 bytes or a reset), not a hang.
        var buffer = new byte[16];
        try
        {
            int read = await client.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(Timeout);
            Assert.Equal(0, read);
        }
        catch (SocketException ex)
        {
            Assert.Equal(SocketError.ConnectionReset, ex.SocketErrorCode);
        }
    }

    [Fact]
    public async Task A_pause_granted_while_the_pump_waits_for_the_app_to_read_leaves_the_readable_edge_to_the_holder()
    {
        // The pump stops reading once the input holds MaxReadBufferSize (its flush waits for the app). A pause then
        // is granted at once, and the holder's first move, draining the input, completes that flush: the pump must
        // park, not go on to wait for the next readable edge, which has one waiter: the holder's.
        const int maxRead = 64 * 1024;
        const int chunk = 1000; // Under the 2 KiB the pump reads at least, so its last read before the limit is short.
        // Just past the limit, and then nothing until the holder asks: no edge comes after the pump's last read,
        // so a pump that went back to the edge would wait on it, beside the holder.
        byte[] backlog = RandomNumberGenerator.GetBytes((maxRead / chunk + 1) * chunk);
        byte[] direct = RandomNumberGenerator.GetBytes(1024 * 1024);
        var outcome = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        var seam = new FaultInjectingSyscalls();

        await using var host = await StartAsync(async connection =>
        {
            var handoff = connection.Features.Get<ISocketHandoffFeature>()!;
            PipeReader input = connection.Transport.Input;
            // The app reads nothing until the pump has received the whole backlog: its flush past the limit waits.
            FaultInjectingSyscalls.SocketLog log = seam.For(handoff.Socket);
            await Poll.EventuallyAsync(() => log.ReceivedBytes >= backlog.Length,
                () => $"the pump to receive the whole backlog ({log.ReceivedBytes} of {backlog.Length} bytes)", Timeout);
            ReadResult read;
            Assert.True(await handoff.PauseReceivingAsync(CancellationToken.None).WaitAsync(Timeout));
            byte[] received;
            try
            {
                Assert.True(input.TryRead(out read));
                byte[] buffered = read.Buffer.ToArray();
                input.AdvanceTo(read.Buffer.End); // Completes the pump's flush.
                await WriteAsync(connection.Transport.Output, "R");
                byte[] rest = await ReceiveExactlyAsync(handoff, backlog.Length + direct.Length - buffered.Length).WaitAsync(Timeout);
                received = [.. buffered, .. rest];
            }
            finally
            {
                handoff.ResumeReceiving();
            }
            await WriteAsync(connection.Transport.Output, "P");
            Assert.Equal("TAIL\n", await ReadLineAsync(input).WaitAsync(Timeout)); // The resumed pump reads on.
            outcome.TrySetResult(received);
            await WriteAsync(connection.Transport.Output, "DONE");
        }, o =>
        {
            o.MaxReadBufferSize = maxRead;
            o.Syscalls = seam;
        });

        using Socket client = await ConnectAsync(host.Port);
        for (int sent = 0; sent < backlog.Length; sent += chunk)
        {
            await client.SendAsync(backlog.AsMemory(sent, Math.Min(chunk, backlog.Length - sent)));
            await Task.Delay(1);
        }
        Assert.Equal("R", await ReceiveTextAsync(client, 1).WaitAsync(Timeout));
        await client.SendAsync(direct);
        Assert.Equal("P", await ReceiveTextAsync(client, 1).WaitAsync(Timeout));
        await client.SendAsync(Encoding.ASCII.GetBytes("TAIL\n"));
        Assert.Equal(SHA256.HashData([.. backlog, .. direct]), SHA256.HashData(await outcome.Task.WaitAsync(Timeout)));
        Assert.Equal("DONE", await ReceiveTextAsync(client, 4).WaitAsync(Timeout));
        Assert.Empty(await ReceiveToEndAsync(client).WaitAsync(Timeout)); // The connection closes.
    }

    private static Task<SpliceTestHost> StartAsync(Func<ConnectionContext, Task> handler, Action<SpliceTransportOptions>? configureTransport = null) =>
        SpliceTestHost.StartAsync(
            _ => { },
            configureTransport: configureTransport,
            configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel =>
                kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Run(handler))));

    private static async Task<Socket> ConnectAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 64 * 1024 };
        await socket.ConnectAsync(IPAddress.Loopback, port);
        return socket;
    }

    /// <summary>recv(2) straight from the borrowed socket, exactly <paramref name="count"/> bytes, waiting on its edges.</summary>
    private static async Task<byte[]> ReceiveExactlyAsync(ISocketHandoffFeature handoff, int count)
    {
        var buffer = new byte[count];
        int received = 0;
        ReadinessEdge readable = handoff.Readiness.Readable;
        while (received < count)
        {
            Assert.False(handoff.IsShuttingDown);
            int seen = readable.Observe();
            SyscallResult result = handoff.Syscalls.Receive(handoff.Socket, buffer.AsSpan(received));
            if (result.WouldBlock)
            {
                await readable.WaitAsync(seen);
                continue;
            }
            Assert.True(result.IsSuccess, $"recv failed: errno {result.Errno}");
            Assert.NotEqual(0, result.Count);
            received += (int)result.Count;
        }
        return buffer;
    }

    /// <summary>write(2) straight to the borrowed socket, all of <paramref name="bytes"/>, waiting on its edges.</summary>
    private static async Task SendExactlyAsync(ISocketHandoffFeature handoff, byte[] bytes)
    {
        int sent = 0;
        ReadinessEdge writable = handoff.Readiness.Writable;
        while (sent < bytes.Length)
        {
            Assert.False(handoff.IsShuttingDown);
            int seen = writable.Observe();
            SyscallResult result = handoff.Syscalls.WriteFile(handoff.Socket, bytes.AsSpan(sent), offset: null);
            if (result.WouldBlock)
            {
                await writable.WaitAsync(seen);
                continue;
            }
            Assert.True(result.IsSuccess, $"write failed: errno {result.Errno}");
            sent += (int)result.Count;
        }
    }

    private static async Task<string> ReadLineAsync(PipeReader input)
    {
        while (true)
        {
            ReadResult result = await input.ReadAsync();
            var buffer = result.Buffer;
            SequencePosition? newline = buffer.PositionOf((byte)'\n');
            if (newline is not null)
            {
                SequencePosition end = buffer.GetPosition(1, newline.Value);
                string line = Encoding.ASCII.GetString(buffer.Slice(0, end).ToArray());
                input.AdvanceTo(end);
                return line;
            }
            Assert.False(result.IsCompleted, "The input ended before a line.");
            input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private static async Task WriteAsync(PipeWriter output, string text) => await output.WriteAsync(Encoding.ASCII.GetBytes(text));

    private static async Task<string> ReceiveTextAsync(Socket client, int count)
    {
        var buffer = new byte[count];
        int received = 0;
        while (received < count)
        {
            int read = await client.ReceiveAsync(buffer.AsMemory(received)).AsTask().WaitAsync(Timeout);
            Assert.NotEqual(0, read);
            received += read;
        }
        return Encoding.ASCII.GetString(buffer);
    }

    private static async Task<byte[]> ReceiveToEndAsync(Socket client)
    {
        using var all = new MemoryStream();
        var buffer = new byte[256 * 1024];
        while (true)
        {
            int read = await client.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(Timeout);
            if (read == 0)
            {
                return all.ToArray();
            }
            all.Write(buffer, 0, read);
        }
    }
}
