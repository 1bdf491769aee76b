using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>One HTTP/1.1 response read off a raw connection.</summary>
internal sealed record RawHttpResponse(int StatusCode, IReadOnlyDictionary<string, string> Headers, byte[] Body)
{
    public string BodyText => Encoding.UTF8.GetString(Body);

    public string? Header(string name) => Headers.TryGetValue(name, out string? value) ? value : null;

    /// <summary>The response came through SpliceTransport (see SpliceTestHost.TransportHeader).</summary>
    public void AssertServedBySplice() => Assert.Equal("splice", Header(SpliceTestHost.TransportHeader));
}

/// <summary>Bounds for a raw connection's waits: connect and send, and each receive.</summary>
internal sealed record RawHttpTimeouts(TimeSpan Send, TimeSpan Receive);

/// <summary>
/// A hand-driven HTTP/1.1 client over a raw socket, for what HttpClient will not do: pipelining, exact bytes,
/// garbage, resets, reading slowly or not at all. Every wait is bounded, so a hung server fails the test
/// instead of hanging it.
/// </summary>
internal sealed class RawHttpConnection : IDisposable, IAsyncDisposable
{
    /// <summary>The default bound for every wait.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly byte[] _buffer = new byte[64 * 1024];
    private readonly RawHttpTimeouts _timeouts;
    private int _start;
    private int _end;

    private RawHttpConnection(Socket socket, RawHttpTimeouts timeouts)
    {
        Socket = socket;
        _timeouts = timeouts;
    }

    public Socket Socket { get; }

    /// <summary>
    /// Connects to <paramref name="endPoint"/> (TCP or Unix socket); <paramref name="configure"/> runs before the
    /// connect, e.g. to set a small receive buffer so the window the server sees is small from the start.
    /// </summary>
    public static async Task<RawHttpConnection> ConnectAsync(EndPoint endPoint, Action<Socket>? configure = null, RawHttpTimeouts? timeouts = null)
    {
        timeouts ??= new RawHttpTimeouts(Timeout, Timeout);
        var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            configure?.Invoke(socket);
            await socket.ConnectAsync(endPoint).WaitAsync(timeouts.Send);
            return new RawHttpConnection(socket, timeouts);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public static Task<RawHttpConnection> ConnectAsync(int port, Action<Socket>? configure = null, RawHttpTimeouts? timeouts = null) =>
        ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), configure, timeouts);

    /// <summary>A <c>configure</c> callback that sets the receive buffer size.</summary>
    public static Action<Socket> ReceiveBuffer(int size) => socket => socket.ReceiveBufferSize = size;

    /// <summary>The text of a simple request, with <paramref name="extraHeaders"/> as full lines ending in CRLF.</summary>
    public static string Get(string path, string? extraHeaders = null, string method = "GET") =>
        $"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extraHeaders}\r\n";

    public Task SendAsync(string text) => SendAsync(Encoding.ASCII.GetBytes(text));

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            int sent = await Socket.SendAsync(bytes, SocketFlags.None).AsTask().WaitAsync(_timeouts.Send);
            bytes = bytes.Slice(sent);
        }
    }

    /// <summary>
    /// Reads one response completely: a chunked, Content-Length or to-end-of-stream body; none for
    /// <paramref name="head"/> (the headers alone cannot tell), 1xx, 204 and 304.
    /// </summary>
    public async Task<RawHttpResponse> ReadResponseAsync(bool head = false)
    {
        (int status, Dictionary<string, string> headers) = await ReadHeadAsync();
        var body = new MemoryStream();
        if (head || status is 204 or 304 || status < 200)
        {
            // No body.
        }
        else if (headers.TryGetValue("Transfer-Encoding", out string? encoding) && encoding.Contains("chunked", StringComparison.OrdinalIgnoreCase))
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
                Assert.Equal("", await ReadLineAsync());
            }
        }
        else if (headers.TryGetValue("Content-Length", out string? lengthText))
        {
            await CopyBodyAsync(long.Parse(lengthText, CultureInfo.InvariantCulture), chunk => body.Write(chunk.Span));
        }
        else
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
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        return (int.Parse(parts[1], CultureInfo.InvariantCulture), headers);
    }

    /// <summary>
    /// Passes the next <paramref name="count"/> bytes (or everything up to the end of the stream, for
    /// long.MaxValue) to <paramref name="onChunk"/>; fails if the stream ends first.
    /// </summary>
    public async Task<long> CopyBodyAsync(long count, Action<ReadOnlyMemory<byte>> onChunk)
    {
        long copied = await CopyUpToAsync(count, onChunk);
        Assert.True(copied == count || count == long.MaxValue, $"The connection ended after {copied} of {count} body bytes.");
        return copied;
    }

    /// <summary>Reads up to <paramref name="count"/> bytes and throws them away; returns how many arrived before the close.</summary>
    public Task<long> DrainAsync(long count) => CopyUpToAsync(count, _ => { });

    /// <summary>Reads a body of <paramref name="count"/> bytes and returns its SHA-256 in hex.</summary>
    public async Task<string> ReadBodySha256Async(long count)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await CopyBodyAsync(count, chunk => hash.AppendData(chunk.Span));
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    /// <summary>Everything the server sends until it closes the connection (empty when it closed at once).</summary>
    public async Task<byte[]> ReadToEndAsync()
    {
        var all = new MemoryStream();
        await CopyUpToAsync(long.MaxValue, chunk => all.Write(chunk.Span));
        return all.ToArray();
    }

    /// <summary>
    /// True once the server has closed the connection (end of stream or reset), after discarding whatever it
    /// sent first; false if it is still open when <paramref name="within"/> has passed.
    /// </summary>
    public async Task<bool> WaitForCloseAsync(TimeSpan within)
    {
        _start = _end = 0;
        // Larger than the parse buffer: a server still sending a big body must not outrun the wait.
        byte[] sink = new byte[256 * 1024];
        try
        {
            using var timeout = new CancellationTokenSource(within);
            while (true)
            {
                int n = await Socket.ReceiveAsync(sink, SocketFlags.None, timeout.Token);
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

    /// <summary>Closes with a reset (RST) instead of a FIN: linger on, with a zero timeout.</summary>
    public void Reset()
    {
        Socket.LingerState = new LingerOption(true, 0);
        Socket.Close();
    }

    public void Dispose() => Socket.Dispose();

    public ValueTask DisposeAsync()
    {
        Socket.Dispose();
        return ValueTask.CompletedTask;
    }

    private async Task<long> CopyUpToAsync(long count, Action<ReadOnlyMemory<byte>> onChunk)
    {
        long copied = 0;
        while (copied < count)
        {
            if (_start == _end && !await FillAsync())
            {
                break;
            }
            int n = (int)Math.Min(_end - _start, count - copied);
            onChunk(_buffer.AsMemory(_start, n));
            _start += n;
            copied += n;
        }
        return copied;
    }

    private async Task<string> ReadLineAsync()
    {
        var line = new StringBuilder();
        while (true)
        {
            Assert.True(_start < _end || await FillAsync(), $"The connection ended in the middle of a line: '{line}'");
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
        _end = await Socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None).AsTask().WaitAsync(_timeouts.Receive);
        return _end > 0;
    }
}
