using System.Net;
using Microsoft.Extensions.Logging;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// Clients that send garbage, reset mid-request, or vanish mid-response cost nothing: their connections
/// close, no error is logged by the transport, and the next client is served normally.
/// </summary>
public class MisbehavingClientTests
{
    private const long LargeResponseSize = 256L * 1024 * 1024;

    /// <summary>
    /// Shorter than the Kestrel timeouts below, so that only the transport noticing the client's end can
    /// close a connection in time.
    /// </summary>
    private static readonly TimeSpan CloseTimeout = TimeSpan.FromSeconds(20);

    private sealed class Probe
    {
        public TaskCompletionSource UploadStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource<Exception> UploadFailed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource DownloadEnded { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource DownloadStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private static Task<SpliceTestHost> StartAsync(Probe probe, Action<SpliceTransportOptions>? configure = null) => SpliceTestHost.StartAsync(
        app =>
        {
            app.MapGet("/hello", () => "hello");
            app.MapPost("/upload", async context =>
            {
                try
                {
                    byte[] buffer = new byte[64 * 1024];
                    while (await context.Request.Body.ReadAsync(buffer) > 0)
                    {
                        probe.UploadStarted.TrySetResult();
                    }
                    await context.Response.WriteAsync("complete");
                }
                catch (Exception ex)
                {
                    probe.UploadFailed.TrySetResult(ex);
                }
            });
            app.MapGet("/download", async context =>
            {
                byte[] chunk = new byte[64 * 1024];
                try
                {
                    context.Response.ContentLength = LargeResponseSize;
                    for (long sent = 0; sent < LargeResponseSize; sent += chunk.Length)
                    {
                        // Kestrel does not fail writes to a connection that has gone (they are dropped); it
                        // cancels RequestAborted, which is what stops a well-written handler.
                        await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
                        probe.DownloadStarted.TrySetResult();
                    }
                }
                catch (OperationCanceledException)
                {
                }
                finally
                {
                    probe.DownloadEnded.TrySetResult();
                }
            });
        },
        configure,
        builder => builder.WebHost.ConfigureKestrel(kestrel =>
        {
            // Kestrel's own timeouts would eventually close a connection the transport failed to end.
            kestrel.Limits.MinRequestBodyDataRate = null;
            kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromMinutes(5);
            kestrel.Limits.KeepAliveTimeout = TimeSpan.FromMinutes(5);
        }));

    [Fact]
    public async Task GarbageGetsA400AndCostsNothing()
    {
        await using var host = await StartAsync(new Probe());

        using (var connection = await RawHttpConnection.ConnectAsync(host.Port))
        {
            await connection.SendAsync(new byte[] { 0, 1, 2, 0xFF, (byte)'\r', (byte)'\n', (byte)'G', (byte)'\r', (byte)'\n', (byte)'\r', (byte)'\n' });
            string reply = System.Text.Encoding.ASCII.GetString(await connection.ReadToEndAsync());
            Assert.StartsWith("HTTP/1.1 400 Bad Request", reply);
        }
        using (var connection = await RawHttpConnection.ConnectAsync(host.Port))
        {
            // Not HTTP at all, and more of it than a request line may hold.
            await connection.SendAsync(new string('\u0007', 100_000));
            Assert.True(await connection.WaitForCloseAsync(RawHttpConnection.Timeout), "The server kept a garbage connection open.");
        }

        await AssertCostsNothingAsync(host, expectedAccepted: 2);
    }

    [Fact]
    public async Task AResetInTheMiddleOfARequestBodyCostsNothing()
    {
        var probe = new Probe();
        await using var host = await StartAsync(probe);

        var connection = await RawHttpConnection.ConnectAsync(host.Port);
        await connection.SendAsync("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\n");
        await connection.SendAsync(new byte[100_000]);
        // At once: the reset often reaches the server together with the data, in one epoll event.
        connection.Reset();

        await AssertCostsNothingAsync(host, expectedAccepted: 1, resetsBeforeAccept: true);
        // If the request reached the application, its body read failed rather than waiting for more.
        Assert.True(probe.UploadFailed.Task.IsCompleted || !probe.UploadStarted.Task.IsCompleted, "The handler is still reading a body whose client reset.");
    }

    [Fact]
    public async Task AClientThatResetsWhileTheHandlerReadsCostsNothing()
    {
        var probe = new Probe();
        await using var host = await StartAsync(probe);

        var connection = await RawHttpConnection.ConnectAsync(host.Port);
        await connection.SendAsync("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\n");
        await connection.SendAsync(new byte[100_000]);
        await probe.UploadStarted.Task.WaitAsync(RawHttpConnection.Timeout);
        connection.Reset();

        // The application saw the request end abnormally (Kestrel reports a reset as an IOException).
        Exception failure = await probe.UploadFailed.Task.WaitAsync(RawHttpConnection.Timeout);
        Assert.True(failure is IOException or OperationCanceledException, failure.ToString());
        await AssertCostsNothingAsync(host, expectedAccepted: 1);
    }

    [Fact]
    public async Task AClientThatHalfClosesAfterItsRequestIsClosedByTheServer()
    {
        await using var host = await StartAsync(new Probe());
        for (int i = 0; i < 10; i++)
        {
            using var connection = await RawHttpConnection.ConnectAsync(host.Port);
            await connection.SendAsync("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
            // The FIN often arrives with the request, in one epoll event: the server must still notice it.
            connection.Socket.Shutdown(System.Net.Sockets.SocketShutdown.Send);
            // Kestrel aborts the response when the input ends (KestrelServerOptions.FinOnError is off), so
            // whether "hello" arrives first is a race in Kestrel itself; the close must come either way: a FIN
            // after the response, or the reset an abort sends (as Kestrel's socket transport does).
            using var timeout = new CancellationTokenSource(CloseTimeout);
            string reply;
            try
            {
                reply = System.Text.Encoding.ASCII.GetString(await connection.ReadToEndAsync().WaitAsync(timeout.Token));
            }
            catch (System.Net.Sockets.SocketException ex) when (ex.SocketErrorCode == System.Net.Sockets.SocketError.ConnectionReset)
            {
                reply = string.Empty;
            }
            Assert.True(reply.Length == 0 || reply.StartsWith("HTTP/1.1 200 OK", StringComparison.Ordinal), reply);
        }

        await AssertCostsNothingAsync(host, expectedAccepted: 10);
    }

    [Fact]
    public async Task AResetBeforeTheRequestIsCompleteCostsNothing()
    {
        await using var host = await StartAsync(new Probe());
        for (int i = 0; i < 20; i++)
        {
            var connection = await RawHttpConnection.ConnectAsync(host.Port);
            await connection.SendAsync("GET /hello HTTP/1.1\r\nHost: loc");
            connection.Reset();
        }
        for (int i = 0; i < 20; i++)
        {
            // Reset before sending anything at all.
            (await RawHttpConnection.ConnectAsync(host.Port)).Reset();
        }

        await AssertCostsNothingAsync(host, expectedAccepted: 40, resetsBeforeAccept: true);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AClientThatVanishesMidResponseCostsNothing(bool reset)
    {
        var probe = new Probe();
        await using var host = await StartAsync(probe);

        var connection = await RawHttpConnection.ConnectAsync(host.Port);
        await connection.SendAsync("GET /download HTTP/1.1\r\nHost: localhost\r\n\r\n");
        (int status, _) = await connection.ReadHeadAsync();
        Assert.Equal(200, status);
        await connection.CopyBodyAsync(1024 * 1024, _ => { });
        if (reset)
        {
            connection.Reset();
        }
        else
        {
            connection.Dispose();
        }

        // RequestAborted fires once the peer has gone (or Kestrel drops the writes), so the handler ends.
        await probe.DownloadEnded.Task.WaitAsync(RawHttpConnection.Timeout);

        await AssertCostsNothingAsync(host, expectedAccepted: 1);
    }

    /// <summary>
    /// Every connection is closed (the active-connection gauge returns to zero), the transport logged no
    /// error, and a well-behaved client is served afterwards.
    /// </summary>
    /// <param name="resetsBeforeAccept">A client's reset may reach the server before accept4, which then never returns it.</param>
    private static async Task AssertCostsNothingAsync(SpliceTestHost host, int expectedAccepted, bool resetsBeforeAccept = false)
    {
        await Poll.EventuallyAsync(() => host.Metrics.ActiveConnections == 0, () => $"no connection open ({host.Metrics.ActiveConnections} still are)", CloseTimeout);
        if (resetsBeforeAccept)
        {
            Assert.InRange(host.Metrics.AcceptedConnections, 0, expectedAccepted);
        }
        else
        {
            Assert.Equal(expectedAccepted, host.Metrics.AcceptedConnections);
        }

        using var client = host.CreateClient();
        using var response = await client.GetAsync("/hello");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        TransportAssert.ServedBySplice(response);
        Assert.Equal("hello", await response.Content.ReadAsStringAsync());

        // Kestrel itself may log an error when a reset cuts a body read short (its automatic drain of the
        // request body then finds the reader mid-read); the transport must log none.
        var transportErrors = host.Logs.AtLeast(LogLevel.Error).Where(e => e.Category.StartsWith("SpliceTransport", StringComparison.Ordinal)).ToList();
        Assert.True(transportErrors.Count == 0, "SpliceTransport logged errors:\n" + string.Join("\n", transportErrors));
    }
}
