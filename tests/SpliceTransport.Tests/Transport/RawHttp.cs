using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace SpliceTransport.Tests.Transport;

/// <summary>One HTTP/1.1 response read off a raw connection.</summary>
internal sealed record RawHttpResponse(int StatusCode, IReadOnlyDictionary<string, string> Headers, byte[] Body)
{
    public string BodyText => Encoding.UTF8.GetString(Body);

    public string? Header(string name) => Headers.TryGetValue(name, out string? value) ? value : null;

    /// <summary>The response came through SpliceTransport (see SpliceTestHost.TransportHeader).</summary>
    public void AssertServedBySplice() =>
        Assert.Equal("splice", Header(Infrastructure.SpliceTestHost.TransportHeader));
}

/// <summary>
/// A hand-driven HTTP/1.1 client over a raw socket, for what HttpClient will not do: pipelining, garbage,
/// resets, not reading. Every wait is bounded by <see cref="Timeout"/>, so a hung server fails the test
/// instead of hanging it.
/// </summary>
internal sealed class RawHttpConnection : IDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private RawHttpConnection(Socket socket) => Socket = socket;

    public Socket Socket { get; }

    public static async Task<RawHttpConnection> ConnectAsync(EndPoint endPoint, Action<Socket>? configure = null)
    {
        var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            configure?.Invoke(socket);
            await socket.ConnectAsync(endPoint).WaitAsync(Timeout);
            return new RawHttpConnection(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public static Task<RawHttpConnection> ConnectAsync(int port, Action<Socket>? configure = null) =>
        ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), configure);

    public Task SendAsync(string text) => SendAsync(Encoding.ASCII.GetBytes(text));

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            int sent = await Socket.SendAsync(bytes, SocketFlags.None).AsTask().WaitAsync(Timeout);
            bytes = bytes.Slice(sent);
        }
    }

    /// <summary>Reads one response (Content-Length, chunked, or to end of stream) completely.</summary>
    public async Task<RawHttpResponse> ReadResponseAsync()
    {
        (int status, Dictionary<string, string> headers) = await ReadHeadAsync();
        var body = new MemoryStream();
        if (headers.TryGetValue("Transfer-Encoding", out string? encoding) && encoding.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            while (true)
            {
                string sizeLine = await ReadLineAsync();
                int size = Convert.ToInt32(sizeLine.Split(';')[0].Trim(), 16);
                if (size == 0)
                {
                    while ((await ReadLineAsync()).Length > 0)
                    {
                        // Trailers: not needed by the tests.
                    }
                    break;
                }
                await CopyBodyAsync(size, chunk => body.Write(chunk.Span));
                await ReadLineAsync();
            }
        }
        else if (headers.TryGetValue("Content-Length", out string? lengthText))
        {
            await CopyBodyAsync(long.Parse(lengthText), chunk => body.Write(chunk.Span));
        }
        else if (status is not (204 or 304) && status >= 200)
        {
            await CopyBodyAsync(long.MaxValue, chunk => body.Write(chunk.Span));
        }
        return new RawHttpResponse(status, headers, body.ToArray());
    }

    /// <summary>Reads a response's status line and headers; the body is left for <see cref="CopyBodyAsync"/>.</summary>
    public async Task<(int StatusCode, Dictionary<string, string> Headers)> ReadHeadAsync()
    {
        string statusLine = await ReadLineAsync();
        string[] parts = statusLine.Split(' ', 3);
        Assert.True(parts.Length >= 2 && parts[0].StartsWith("HTTP/1.", StringComparison.Ordinal), $"Not a status line: '{statusLine}'");
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        string line;
        while ((line = await ReadLineAsync()).Length > 0)
        {
            int colon = line.IndexOf(':');
            headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        return (int.Parse(parts[1]), headers);
    }

    /// <summary>
    /// Passes the next <paramref name="count"/> bytes (or everything up to the end of the stream, for
    /// long.MaxValue) to <paramref name="onChunk"/>; returns how many came.
    /// </summary>
    public async Task<long> CopyBodyAsync(long count, Action<ReadOnlyMemory<byte>> onChunk)
    {
        long copied = 0;
        while (copied < count)
        {
            if (_start == _end && !await FillAsync())
            {
                Assert.True(count == long.MaxValue, $"The connection ended after {copied} of {count} body bytes.");
                break;
            }
            int n = (int)Math.Min(_end - _start, count - copied);
            onChunk(_buffer.AsMemory(_start, n));
            _start += n;
            copied += n;
        }
        return copied;
    }

    /// <summary>Reads a body of <paramref name="count"/> bytes and returns its SHA-256 in hex.</summary>
    public async Task<string> ReadBodySha256Async(long count)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await CopyBodyAsync(count, chunk => hash.AppendData(chunk.Span));
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    /// <summary>
    /// True once the server has closed the connection (end of stream or reset), after discarding whatever it
    /// sent first; false if it is still open when <paramref name="within"/> has passed.
    /// </summary>
    public async Task<bool> WaitForCloseAsync(TimeSpan within)
    {
        _start = _end = 0;
        try
        {
            using var timeout = new CancellationTokenSource(within);
            while (true)
            {
                int n = await Socket.ReceiveAsync(_buffer, SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>Everything the server sends until it closes the connection, as text.</summary>
    public async Task<string> ReadToEndAsync()
    {
        var all = new MemoryStream();
        await CopyBodyAsync(long.MaxValue, chunk => all.Write(chunk.Span));
        return Encoding.ASCII.GetString(all.ToArray());
    }

    private async Task<string> ReadLineAsync()
    {
        var line = new StringBuilder();
        while (true)
        {
            if (_start == _end && !await FillAsync())
            {
                throw new IOException($"The connection ended in the middle of a line: '{line}'");
            }
            int newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            int stop = newline < 0 ? _end : newline;
            line.Append(Encoding.ASCII.GetString(_buffer, _start, stop - _start));
            if (newline >= 0)
            {
                _start = newline + 1;
                return line.ToString().TrimEnd('\r');
            }
            _start = _end;
        }
    }

    private async Task<bool> FillAsync()
    {
        _start = 0;
        _end = await Socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None).AsTask().WaitAsync(Timeout);
        return _end > 0;
    }

    /// <summary>Closes with a reset (RST) instead of a FIN: linger on, with a zero timeout.</summary>
    public void Reset()
    {
        Socket.LingerState = new LingerOption(true, 0);
        Socket.Close();
    }

    public void Dispose() => Socket.Dispose();
}
