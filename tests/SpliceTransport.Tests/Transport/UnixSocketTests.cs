using System.Net;
using System.Net.Sockets;
using SpliceTransport.Interop;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>Unix-domain socket endpoints ("http://unix:/path"): serving, stale socket files, clean-up.</summary>
public class UnixSocketTests
{
    private const int ResponseSize = 1024 * 1024;

    private static string NewSocketPath() => Path.Combine(Path.GetTempPath(), $"splice-{Guid.NewGuid():N}.sock");

    private static Task<SpliceTestHost> StartAsync(string path, byte[] payload) => SpliceTestHost.StartAsync(
        app =>
        {
            app.MapGet("/hello", (HttpContext context) => $"hello from {context.Connection.LocalIpAddress?.ToString() ?? "no IP"}");
            app.MapGet("/big", () => Results.Bytes(payload, "application/octet-stream"));
        },
        urls: [$"http://unix:{path}"]);

    private static HttpClient CreateUnixClient(string path) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (_, cancellationToken) =>
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        },
    })
    {
        BaseAddress = new Uri("http://localhost/"),
        Timeout = TimeSpan.FromSeconds(60),
    };

    [Fact]
    public async Task RequestsOverAUnixSocketAreServed()
    {
        string path = NewSocketPath();
        byte[] payload = new byte[ResponseSize];
        new Random(5).NextBytes(payload);
        await using (var host = await StartAsync(path, payload))
        {
            Assert.Equal($"http://unix:{path}", Assert.Single(host.Addresses));
            Assert.True(File.Exists(path));
            using var client = CreateUnixClient(path);

            for (int i = 0; i < 3; i++)
            {
                using var response = await client.GetAsync("/hello");
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                TransportAssert.ServedBySplice(response);
                Assert.Equal("hello from no IP", await response.Content.ReadAsStringAsync());
            }
            using (var big = await client.GetAsync("/big"))
            {
                TransportAssert.ServedBySplice(big);
                Assert.Equal(TestFiles.Sha256(payload), TestFiles.Sha256(await big.Content.ReadAsByteArrayAsync()));
            }

            Assert.Equal(1, host.Metrics.AcceptedConnections);
            host.Logs.AssertNoErrors();
        }
        Assert.False(File.Exists(path), "The socket file was left behind after the host stopped.");
    }

    [Fact]
    public async Task AStaleSocketFileIsReplacedAndRemovedAfterStop()
    {
        string path = NewSocketPath();
        // A previous run that died without cleaning up leaves its socket file; nobody listens on it.
        // (A .NET Socket unlinks its file on dispose, so the socket is made with plain socket(2) and bind(2).)
        using (FileDescriptorHandle previous = Syscalls.Default.OpenStreamSocket(new UnixDomainSocketEndPoint(path)).DescriptorOrThrow("socket"))
        {
            Assert.True(Syscalls.Default.Bind(previous, new UnixDomainSocketEndPoint(path)).IsSuccess);
        }
        Assert.True(File.Exists(path));

        await using (var host = await StartAsync(path, []))
        {
            using var client = CreateUnixClient(path);
            using var response = await client.GetAsync("/hello");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            TransportAssert.ServedBySplice(response);
            host.Logs.AssertNoErrors();
        }
        Assert.False(File.Exists(path), "The socket file was left behind after the host stopped.");
    }

    [Fact]
    public async Task ARegularFileAtTheSocketPathIsNotDeleted()
    {
        string path = NewSocketPath();
        await File.WriteAllTextAsync(path, "not a socket");
        try
        {
            // Only stale sockets are removed: a regular file makes the bind fail, as it does with Kestrel's sockets.
            await Assert.ThrowsAnyAsync<Exception>(() => StartAsync(path, []));
            Assert.Equal("not a socket", await File.ReadAllTextAsync(path));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
