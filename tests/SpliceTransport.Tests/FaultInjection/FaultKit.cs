using System.Net.Sockets;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.FaultInjection;

/// <summary>Helpers shared by the fault-injection tests; every wait is bounded.</summary>
internal static class FaultKit
{
    /// <summary>A host on SpliceTransport whose data path goes through <paramref name="syscalls"/>.</summary>
    public static Task<SpliceTestHost> StartAsync(FaultInjectingSyscalls syscalls, Action<WebApplication> configureApp, int? threadCount = null) =>
        SpliceTestHost.StartAsync(configureApp, options =>
        {
            options.Syscalls = syscalls;
            if (threadCount is { } threads)
            {
                options.ThreadCount = threads;
            }
        });

    public static long ActiveConnections(SpliceTestHost host) => host.Metrics.ActiveConnections;

    /// <summary>Waits until the host's active-connection metric is back to 0 (every descriptor closed).</summary>
    public static Task WaitForNoActiveConnectionsAsync(SpliceTestHost host) =>
        Bytes.EventuallyAsync(() => ActiveConnections(host) == 0, () => $"{ActiveConnections(host)} connection(s) still active");

    public static int OpenDescriptors() => Directory.GetFiles("/proc/self/fd").Length;

    /// <summary>
    /// Reads everything the server sends until it ends the connection, with a FIN (<c>Error</c> null) or a
    /// reset (the socket error); fails if it is still open after <paramref name="within"/>.
    /// </summary>
    public static async Task<(byte[] Bytes, SocketError? Error)> ReadUntilClosedAsync(Socket socket, TimeSpan within, int bufferSize = 64 * 1024)
    {
        var all = new MemoryStream();
        byte[] buffer = new byte[bufferSize];
        using var timeout = new CancellationTokenSource(within);
        try
        {
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    return (all.ToArray(), null);
                }
                all.Write(buffer, 0, n);
            }
        }
        catch (SocketException ex)
        {
            return (all.ToArray(), ex.SocketErrorCode);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"The server neither finished nor closed the connection within {within} ({all.Length} bytes received).");
            throw;
        }
    }

    /// <summary>The index just past the blank line that ends a response's head, or -1.</summary>
    public static int EndOfHead(ReadOnlySpan<byte> bytes)
    {
        int end = bytes.IndexOf("\r\n\r\n"u8);
        return end < 0 ? -1 : end + 4;
    }

    /// <summary>
    /// <paramref name="bytes"/> is a 200 head (if it got that far) followed by an exact prefix of the file.
    /// </summary>
    public static void AssertPrefixOfFile(byte[] bytes, string path, long size)
    {
        int bodyStart = EndOfHead(bytes);
        if (bodyStart < 0)
        {
            Assert.True(bytes.Length < 1024, $"{bytes.Length} bytes arrived without the end of a head.");
            return;
        }
        Assert.StartsWith("HTTP/1.1 200 OK", System.Text.Encoding.ASCII.GetString(bytes, 0, bodyStart));
        int bodyLength = bytes.Length - bodyStart;
        Assert.True(bodyLength <= size);
        Assert.True(TestFiles.Sha256(path, 0, bodyLength) == TestFiles.Sha256(bytes.AsSpan(bodyStart)),
            $"The {bodyLength} body bytes that arrived are not the file's first {bodyLength} bytes.");
    }
}
