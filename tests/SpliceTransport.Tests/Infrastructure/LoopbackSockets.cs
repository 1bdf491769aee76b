using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>Reads and addresses the connection-level tests share: to the end, exactly N bytes, a closed port.</summary>
internal static class LoopbackSockets
{
    /// <summary>A port that was just free: nothing listens there, so a connect is refused at once.</summary>
    public static IPEndPoint ClosedPort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return (IPEndPoint)probe.LocalEndPoint!;
    }

    /// <summary>Every byte the peer sends until its FIN; a reset throws its SocketException.</summary>
    public static async Task<byte[]> ReadToEndAsync(Socket socket)
    {
        using var received = new MemoryStream();
        byte[] buffer = new byte[64 * 1024];
        int n;
        while ((n = await socket.ReceiveAsync(buffer)) > 0)
        {
            received.Write(buffer, 0, n);
        }
        return received.ToArray();
    }

    /// <summary>Every byte of a connection's input until it completes.</summary>
    public static async Task<byte[]> ReadToEndAsync(PipeReader reader)
    {
        using var received = new MemoryStream();
        while (true)
        {
            ReadResult result = await reader.ReadAsync();
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                received.Write(segment.Span);
            }
            reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return received.ToArray();
            }
        }
    }

    /// <summary>Exactly <paramref name="count"/> bytes; an earlier FIN throws <see cref="EndOfStreamException"/>.</summary>
    public static async Task<byte[]> ReadExactlyAsync(Socket socket, int count)
    {
        byte[] buffer = new byte[count];
        int read = 0;
        while (read < count)
        {
            int n = await socket.ReceiveAsync(buffer.AsMemory(read));
            if (n == 0)
            {
                throw new EndOfStreamException($"The peer closed after {read} of {count} bytes.");
            }
            read += n;
        }
        return buffer;
    }
}
