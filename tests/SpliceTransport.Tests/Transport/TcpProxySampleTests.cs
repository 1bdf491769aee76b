using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Logging;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;
using TcpProxy;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// The sample itself (samples/TcpProxy, its own argument parsing and handler), in-process on real Kestrel, with a
/// real client and upstream on loopback: what a new user gets from it.
/// </summary>
public class TcpProxySampleTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    private static async Task<(WebApplication App, LogCollector Logs, IPEndPoint EndPoint)> StartAsync(string upstream, string transport, params string[] more)
    {
        var logs = new LogCollector();
        WebApplication app = ProxyApp.Build(
            ["--listen", "127.0.0.1:0", "--upstream", upstream, "--transport", transport, .. more],
            builder =>
            {
                builder.Logging.ClearProviders();
                builder.Logging.AddProvider(logs);
            });
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return (app, logs, new IPEndPoint(IPAddress.Loopback, new Uri(address).Port));
    }

    [Theory]
    [InlineData("splice")]
    [InlineData("sockets")]
    public async Task AnEchoThroughTheProxyIsExactAndLoggedInOneLine(string transport)
    {
        using var upstream = new TcpListener(IPAddress.Loopback, 0);
        upstream.Start();
        var (app, logs, endPoint) = await StartAsync(upstream.LocalEndpoint.ToString()!, transport);
        await using var _ = app;
        byte[] payload = RandomNumberGenerator.GetBytes(2 * 1024 * 1024);

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(endPoint);
        using Socket server = await upstream.AcceptSocketAsync().WaitAsync(Wait);
        Task echo = Task.Run(async () =>
        {
            // An echo server that answers as it reads, and closes when it has echoed the whole payload.
            byte[] buffer = new byte[64 * 1024];
            for (int echoed = 0; echoed < payload.Length;)
            {
                int n = await server.ReceiveAsync(buffer);
                Assert.NotEqual(0, n);
                await server.SendAsync(buffer.AsMemory(0, n));
                echoed += n;
            }
            server.Shutdown(SocketShutdown.Both);
        });
        Task<byte[]> received = LoopbackSockets.ReadToEndAsync(client);
        await client.SendAsync(payload);

        Assert.Equal(SHA256.HashData(payload), SHA256.HashData(await received.WaitAsync(Wait)));
        await echo.WaitAsync(Wait);
        client.Close();
        await Bytes.EventuallyAsync(() => logs.Entries.Any(e => e.EventId.Id == 1), "the connection's log line");
        LogCollector.Entry line = logs.Entries.Single(e => e.EventId.Id == 1);
        Assert.Contains($"{payload.Length} bytes to the upstream, {payload.Length} bytes back", line.Message);
        logs.AssertNoErrors();
    }

    [Theory]
    [InlineData("splice")]
    [InlineData("sockets")]
    public async Task AnUpstreamThatIsDownClosesTheClientAtOnce(string transport)
    {
        IPEndPoint down = LoopbackSockets.ClosedPort();
        var (app, logs, endPoint) = await StartAsync(down.ToString(), transport);
        await using var _ = app;

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(endPoint);

        // Closed, not left hanging: the read ends (0 bytes) well within the wait.
        byte[] rest = await LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait);
        Assert.Empty(rest);
        await Bytes.EventuallyAsync(() => logs.Entries.Any(e => e.EventId.Id == 2), "the upstream-unavailable warning");
        Assert.Contains(down.ToString(), logs.Entries.Single(e => e.EventId.Id == 2).Message);
    }

    [Theory]
    [InlineData(new string[] { }, "--upstream is required")]
    [InlineData(new[] { "--upstream", "127.0.0.1" }, "--upstream '127.0.0.1' has no port")]
    [InlineData(new[] { "--upstream", "nowhere" }, "--upstream 'nowhere' is not ADDRESS:PORT")]
    [InlineData(new[] { "--upstream", "127.0.0.1:9", "--transport", "carrier-pigeon" }, "--transport must be 'splice' or 'sockets', not 'carrier-pigeon'")]
    public void BadArgumentsAreNamed(string[] args, string message)
    {
        var error = Assert.Throws<ArgumentException>(() => ProxyApp.Build(args));
        Assert.Contains(message, error.Message);
    }

    /// <param name="splicePipeSize">
    /// Null: the default pipes, which on loopback and a fast disk usually capture everything. 4096: pipes of one
    /// page (SplicePipeSize, the capture's pipe too), which drop most of a 2 MiB stream: the .gaps file is checked too.
    /// </param>
    [Theory]
    [InlineData(null)]
    [InlineData("4096")]
    public async Task ACaptureHoldsExactlyTheBytesOfEachDirection(string? splicePipeSize)
    {
        using var temp = new TestFiles();
        string directory = Path.Combine(temp.Root, "captures"); // Not there yet: the proxy creates it.
        using var upstream = new TcpListener(IPAddress.Loopback, 0);
        upstream.Start();
        string[] more = splicePipeSize is null
            ? ["--capture", directory]
            : ["--capture", directory, "--SpliceTransport:SplicePipeSize", splicePipeSize];
        var (app, logs, endPoint) = await StartAsync(upstream.LocalEndpoint.ToString()!, "splice", more);
        await using var _ = app;
        Assert.True(Directory.Exists(directory));

        // Each direction different (a swapped or mixed-up capture fails), with a small exchange first (copied by
        // splice-auto) and then a stream (spliced), and lengths that are no multiple of a page.
        byte[] banner = RandomNumberGenerator.GetBytes(77);
        byte[] payload = RandomNumberGenerator.GetBytes(2 * 1024 * 1024 + 12_345);
        byte[] answer = [.. banner, .. payload.Select(b => (byte)(b ^ 0x5A))];

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(endPoint);
        using Socket server = await upstream.AcceptSocketAsync().WaitAsync(Wait);
        Task echo = Task.Run(async () =>
        {
            // Says hello, then answers what it reads as it reads it (each byte xor 0x5A), and closes when done.
            await server.SendAsync(banner);
            byte[] buffer = new byte[64 * 1024];
            for (int echoed = 0; echoed < payload.Length;)
            {
                int n = await server.ReceiveAsync(buffer);
                Assert.NotEqual(0, n);
                for (int i = 0; i < n; i++)
                {
                    buffer[i] ^= 0x5A;
                }
                await server.SendAsync(buffer.AsMemory(0, n));
                echoed += n;
            }
            server.Shutdown(SocketShutdown.Both);
        });
        AssertSameBytes(banner, await LoopbackSockets.ReadExactlyAsync(client, banner.Length).WaitAsync(Wait), "the banner the client received");
        Task<byte[]> received = LoopbackSockets.ReadToEndAsync(client);
        await client.SendAsync(payload);
        await echo.WaitAsync(Wait);
        AssertSameBytes(answer[banner.Length..], await received.WaitAsync(Wait), "what the client received after the banner");
        client.Close();

        // The line is logged once the forward has returned, after the captures were closed: the files are complete.
        await Bytes.EventuallyAsync(() => logs.Entries.Any(e => e.EventId.Id == 4), () => "the connection's capture line; logged:\n" + string.Join("\n", logs.Entries));
        logs.AssertNoErrors();
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Id == 1); // One line per connection: 4 replaces 1.
        string line = logs.Entries.Single(e => e.EventId.Id == 4).Message;
        Match m = Regex.Match(line, @"^Connection (?<id>\S+) from \S+: (?<out>\d+) bytes to the upstream, (?<in>\d+) bytes back \(\d+ spliced\); ended Fin/Fin; "
            + @"captured (?<outCaptured>\d+) bytes to the upstream \((?<outDropped>\d+) dropped\) in (?<outPath>\S+), (?<inCaptured>\d+) bytes back \((?<inDropped>\d+) dropped\) in (?<inPath>\S+)\.$");
        Assert.True(m.Success, "Unexpected capture line: " + line);
        string id = m.Groups["id"].Value;
        string c2s = Path.Combine(directory, id + ".c2s"), s2c = Path.Combine(directory, id + ".s2c");
        Assert.Equal(c2s, m.Groups["outPath"].Value);
        Assert.Equal(s2c, m.Groups["inPath"].Value);
        Assert.Equal(payload.Length, long.Parse(m.Groups["out"].Value, CultureInfo.InvariantCulture));
        Assert.Equal(answer.Length, long.Parse(m.Groups["in"].Value, CultureInfo.InvariantCulture));

        AssertCapture(c2s, payload, Number(m, "outCaptured"), Number(m, "outDropped"));
        AssertCapture(s2c, answer, Number(m, "inCaptured"), Number(m, "inDropped"));
        string[] expected = [c2s, s2c, c2s + ".gaps", s2c + ".gaps"];
        Assert.All(Directory.GetFiles(directory), file => Assert.Contains(file, expected));
    }

    [Fact]
    public void CaptureIntoADirectoryWhoseParentIsMissingIsRefused()
    {
        using var temp = new TestFiles();
        string missing = Path.Combine(temp.Root, "no-such-parent", "captures");
        var error = Assert.Throws<ArgumentException>(() => ProxyApp.Build(["--upstream", "127.0.0.1:9", "--capture", missing]));
        Assert.Contains($"--capture '{missing}'", error.Message);
        Assert.False(Directory.Exists(Path.GetDirectoryName(missing)), "nothing is created for a refused --capture");
    }

    [Fact]
    public void CaptureIntoAFileIsRefused()
    {
        using var temp = new TestFiles();
        string file = temp.Create("not-a-directory", 1);
        var error = Assert.Throws<ArgumentException>(() => ProxyApp.Build(["--upstream", "127.0.0.1:9", "--capture", file]));
        Assert.Contains($"--capture '{file}' is a file", error.Message);
    }

    [Fact]
    public void CaptureOnKestrelsSocketTransportIsRefused()
    {
        using var temp = new TestFiles();
        string directory = Path.Combine(temp.Root, "captures"); // Valid: the transport is what is wrong.
        var error = Assert.Throws<ArgumentException>(() => ProxyApp.Build(["--upstream", "127.0.0.1:9", "--transport", "sockets", "--capture", directory]));
        Assert.Contains("--capture", error.Message);
        Assert.Contains("--transport splice", error.Message);
        Assert.False(Directory.Exists(directory), "nothing is created for a refused command line");
    }

    private static long Number(Match match, string group) => long.Parse(match.Groups[group].Value, CultureInfo.InvariantCulture);

    /// <summary>
    /// <paramref name="path"/> holds <paramref name="source"/>, the whole stream of one direction: every byte, when
    /// nothing was dropped (no PATH.gaps); otherwise every byte outside the ranges PATH.gaps lists, in order, and
    /// the gaps add up to what the log said was dropped.
    /// </summary>
    private static void AssertCapture(string path, byte[] source, long captured, long dropped)
    {
        Assert.True(File.Exists(path), $"{path} was not written");
        byte[] file = File.ReadAllBytes(path);
        Assert.Equal(source.Length, captured + dropped);
        Assert.Equal(captured, file.Length);
        string gapsPath = path + ".gaps";
        if (!File.Exists(gapsPath))
        {
            Assert.Equal(0, dropped);
            Assert.Equal(SHA256.HashData(source), SHA256.HashData(file));
            AssertSameBytes(source, file, path);
            return;
        }
        // Dropped bytes (a disk slower than loopback): the file is the source less the gaps.
        Assert.True(dropped > 0, $"{gapsPath} exists, yet the log says nothing was dropped");
        var kept = new MemoryStream();
        long next = 0, gapBytes = 0;
        foreach (string gap in File.ReadAllLines(gapsPath))
        {
            string[] fields = gap.Split(' ');
            Assert.True(fields.Length == 2, $"{gapsPath}: '{gap}' is not 'offset length'");
            long offset = long.Parse(fields[0], CultureInfo.InvariantCulture), length = long.Parse(fields[1], CultureInfo.InvariantCulture);
            Assert.True(offset >= next && length > 0 && offset + length <= source.Length, $"{gapsPath}: '{gap}' is out of order, empty or past the stream's {source.Length} bytes");
            kept.Write(source, (int)next, (int)(offset - next));
            next = offset + length;
            gapBytes += length;
        }
        kept.Write(source, (int)next, (int)(source.Length - next));
        Assert.Equal(dropped, gapBytes);
        AssertSameBytes(kept.ToArray(), file, $"{path} (the stream less the ranges of {gapsPath})");
    }

    /// <summary>Equal lengths and every byte equal; names the first difference.</summary>
    private static void AssertSameBytes(byte[] expected, byte[] actual, string what)
    {
        int common = Math.Min(expected.Length, actual.Length);
        int first = expected.AsSpan(0, common).CommonPrefixLength(actual.AsSpan(0, common));
        Assert.True(expected.Length == actual.Length && first == common,
            $"{what}: {actual.Length} bytes where {expected.Length} were expected, first difference at byte {first}");
    }
}
