using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
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

    private static async Task<(WebApplication App, LogCollector Logs, IPEndPoint EndPoint)> StartAsync(string upstream, string transport)
    {
        var logs = new LogCollector();
        WebApplication app = ProxyApp.Build(
            ["--listen", "127.0.0.1:0", "--upstream", upstream, "--transport", transport],
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
}
