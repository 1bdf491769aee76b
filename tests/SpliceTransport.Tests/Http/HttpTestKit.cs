using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>Bounds for every wait in the Http tests: nothing may hang a test run.</summary>
internal static class Waits
{
    /// <summary>Long enough for a 100 MiB response on a busy 2-core machine; short enough to fail a hang quickly.</summary>
    public static readonly TimeSpan Response = TimeSpan.FromSeconds(60);

    /// <summary>For things that should happen "at once" (a close, a cancellation): generous, still bounded.</summary>
    public static readonly TimeSpan Short = TimeSpan.FromSeconds(10);
}

/// <summary>
/// Files for one test class, created once (a 100 MiB file takes a moment) and deleted with the class.
/// </summary>
public sealed class FileFixture : IDisposable
{
    private readonly ConcurrentDictionary<string, Lazy<string>> _files = new();

    public TestFiles Files { get; } = new();

    public string Root => Files.Root;

    /// <summary>A file of random bytes named <paramref name="name"/> with <paramref name="size"/> bytes, made on first use.</summary>
    public string Get(string name, long size) =>
        _files.GetOrAdd(name, n => new Lazy<string>(() => Files.Create(n, size))).Value;

    public void Dispose() => Files.Dispose();
}

/// <summary>One parsed HTTP/1.1 response read off a raw socket.</summary>
internal sealed record RawResponse(int Status, Dictionary<string, string> Headers, byte[] Body)
{
    public string? Header(string name) => Headers.TryGetValue(name, out string? value) ? value : null;
}

/// <summary>
/// A minimal HTTP/1.1 client over a raw socket, for what HttpClient hides: pipelining, exact bytes on the wire,
/// reading slowly or not at all, closing mid-body.
/// </summary>
internal sealed class RawHttpConnection : IAsyncDisposable
{
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private RawHttpConnection(Socket socket)
    {
        Socket = socket;
    }

    public Socket Socket { get; }

    public static async Task<RawHttpConnection> ConnectAsync(int port, int? receiveBufferSize = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        if (receiveBufferSize is { } size)
        {
            // Set before connect so the window the server sees is small from the start.
            socket.ReceiveBufferSize = size;
        }
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)).WaitAsync(Waits.Short);
        return new RawHttpConnection(socket);
    }

    public async Task SendAsync(string requests)
    {
        byte[] bytes = Encoding.ASCII.GetBytes(requests);
        for (int sent = 0; sent < bytes.Length;)
        {
            sent += await Socket.SendAsync(bytes.AsMemory(sent), SocketFlags.None).AsTask().WaitAsync(Waits.Short);
        }
    }

    public static string Get(string path, string? extraHeaders = null, string method = "GET") =>
        $"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extraHeaders}\r\n";

    /// <summary>Reads one response: status line, headers, and a Content-Length or chunked body (none for HEAD).</summary>
    public async Task<RawResponse> ReadResponseAsync(bool head = false)
    {
        string statusLine = await ReadLineAsync();
        string[] parts = statusLine.Split(' ', 3);
        Assert.True(parts.Length >= 2 && parts[0].StartsWith("HTTP/1.", StringComparison.Ordinal), $"Not a status line: '{statusLine}'");
        int status = int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture);
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        for (string line = await ReadLineAsync(); line.Length > 0; line = await ReadLineAsync())
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        byte[] body;
        if (head || status is 204 or 304 || status < 200)
        {
            body = [];
        }
        else if (headers.TryGetValue("Content-Length", out string? length))
        {
            body = await ReadExactlyAsync(long.Parse(length, System.Globalization.CultureInfo.InvariantCulture));
        }
        else if (headers.TryGetValue("Transfer-Encoding", out string? te) && te.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            using var all = new MemoryStream();
            while (true)
            {
                string sizeLine = await ReadLineAsync();
                int size = Convert.ToInt32(sizeLine.Split(';')[0].Trim(), 16);
                if (size == 0)
                {
                    while ((await ReadLineAsync()).Length > 0)
                    {
                    }
                    break;
                }
                all.Write(await ReadExactlyAsync(size));
                Assert.Equal("", await ReadLineAsync());
            }
            body = all.ToArray();
        }
        else
        {
            body = await ReadToEndAsync();
        }
        return new RawResponse(status, headers, body);
    }

    /// <summary>Reads up to <paramref name="count"/> body bytes and throws them away; returns how many arrived before the close.</summary>
    public async Task<long> DrainAsync(long count)
    {
        long total = 0;
        while (total < count)
        {
            int n = await ReceiveSomeAsync((int)Math.Min(_buffer.Length, count - total));
            if (n == 0)
            {
                break;
            }
            total += n;
        }
        return total;
    }

    /// <summary>Reads until the server closes the connection; returns the byte count (0 when it was closed at once).</summary>
    public async Task<byte[]> ReadToEndAsync()
    {
        using var all = new MemoryStream();
        while (true)
        {
            int n = await ReceiveSomeAsync(_buffer.Length);
            if (n == 0)
            {
                return all.ToArray();
            }
            all.Write(_buffer, _start - n, n);
        }
    }

    /// <summary>True when the server closed (FIN or reset) within <paramref name="timeout"/>, reading and discarding data meanwhile.</summary>
    public async Task<bool> ClosedWithinAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        byte[] sink = new byte[256 * 1024];
        try
        {
            while (true)
            {
                int n = await Socket.ReceiveAsync(sink, SocketFlags.None, cts.Token);
                if (n == 0)
                {
                    return true;
                }
            }
        }
        catch (SocketException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private async Task<int> ReceiveSomeAsync(int max)
    {
        if (_start == _end)
        {
            _start = _end = 0;
            int received = await Socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None).AsTask().WaitAsync(Waits.Response);
            if (received == 0)
            {
                return 0;
            }
            _end = received;
        }
        int n = Math.Min(max, _end - _start);
        _start += n;
        return n;
    }

    private async Task<byte[]> ReadExactlyAsync(long count)
    {
        byte[] result = new byte[count];
        for (long filled = 0; filled < count;)
        {
            int n = await ReceiveSomeAsync((int)Math.Min(_buffer.Length, count - filled));
            Assert.True(n > 0, $"The connection closed after {filled} of {count} body bytes.");
            Buffer.BlockCopy(_buffer, _start - n, result, (int)filled, n);
            filled += n;
        }
        return result;
    }

    private async Task<string> ReadLineAsync()
    {
        var line = new StringBuilder();
        while (true)
        {
            int n = await ReceiveSomeAsync(1);
            Assert.True(n > 0, $"The connection closed in the middle of a header line: '{line}'");
            char c = (char)_buffer[_start - 1];
            if (c == '\n')
            {
                return line.ToString().TrimEnd('\r');
            }
            line.Append(c);
        }
    }

    public ValueTask DisposeAsync()
    {
        Socket.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>Runs the curl command-line client (installed by .ci/run), with a bounded wait.</summary>
internal static class Curl
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static async Task<Result> RunAsync(params string[] arguments)
    {
        var start = new ProcessStartInfo("curl")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.ArgumentList.Add("--silent");
        start.ArgumentList.Add("--show-error");
        start.ArgumentList.Add("--max-time");
        start.ArgumentList.Add("60");
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(Waits.Response);
        }
        catch (TimeoutException)
        {
            process.Kill();
            throw;
        }
        return new Result(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Downloads <paramref name="url"/> into <paramref name="output"/>; returns the HTTP status curl saw.</summary>
    public static async Task<int> DownloadAsync(string url, string output, params string[] extra)
    {
        Result result = await RunAsync([.. extra, "--output", output, "--write-out", "%{http_code}", url]);
        Assert.True(result.ExitCode == 0, $"curl exited with {result.ExitCode}: {result.Stderr}");
        return int.Parse(result.Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }
}

/// <summary>Counts this process's open descriptors on a file, through /proc/self/fd.</summary>
internal static class OpenFiles
{
    public static int Count(string path)
    {
        int count = 0;
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is { } target && (target == path || target == path + " (deleted)"))
                {
                    count++;
                }
            }
            catch (IOException)
            {
                // Closed between the listing and the readlink.
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return count;
    }

    /// <summary>Polls until no descriptor is open on <paramref name="path"/>; returns the last count seen.</summary>
    public static async Task<int> WaitUntilClosedAsync(string path, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        int count;
        while ((count = Count(path)) != 0 && clock.Elapsed < timeout)
        {
            await Task.Delay(50);
        }
        return count;
    }
}

/// <summary>Small helpers for comparing bodies.</summary>
internal static class Bytes
{
    public static byte[] Read(string path, long offset, int count)
    {
        using var file = File.OpenRead(path);
        file.Position = offset;
        byte[] result = new byte[count];
        file.ReadExactly(result);
        return result;
    }

    /// <summary>Polls <paramref name="condition"/> until it holds (metrics are recorded just after the response leaves).</summary>
    public static Task EventuallyAsync(Func<bool> condition, string what) => EventuallyAsync(condition, () => what);

    /// <summary>As above, with a description made when it fails (e.g. from the logs at that moment).</summary>
    public static async Task EventuallyAsync(Func<bool> condition, Func<string> what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > Waits.Short)
            {
                Assert.Fail($"Timed out waiting for: {what()}");
            }
            await Task.Delay(20);
        }
    }
}

/// <summary>A self-signed server certificate for 127.0.0.1, made once per test run.</summary>
internal static class TestCertificate
{
    private static readonly Lazy<System.Security.Cryptography.X509Certificates.X509Certificate2> s_certificate = new(Create);

    public static System.Security.Cryptography.X509Certificates.X509Certificate2 Instance => s_certificate.Value;

    private static System.Security.Cryptography.X509Certificates.X509Certificate2 Create()
    {
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=localhost", key, System.Security.Cryptography.HashAlgorithmName.SHA256);
        var names = new System.Security.Cryptography.X509Certificates.SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        DateTimeOffset now = DateTimeOffset.UtcNow;
        using var certificate = request.CreateSelfSigned(now.AddMinutes(-5), now.AddDays(1));
        // Re-imported: an ephemeral key is not usable by SslStream on Linux.
        return System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadPkcs12(
            certificate.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pfx), null);
    }

    /// <summary>Configures Kestrel's https endpoints with <see cref="Instance"/> (and HTTP/1.1 + HTTP/2 via ALPN).</summary>
    public static void UseFor(WebApplicationBuilder builder) =>
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureHttpsDefaults(https => https.ServerCertificate = Instance));
}
