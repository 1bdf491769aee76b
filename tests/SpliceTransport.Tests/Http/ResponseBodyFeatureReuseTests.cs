using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Http.Features;
using SpliceTransport.Http;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// The response body feature is one object per HTTP/1.x connection, reused request after request (its requests run
/// one after another), and one per HTTP/2 stream (they run at once): a reused feature answers each request as a new
/// one would, whatever the request before it did.
/// </summary>
public class ResponseBodyFeatureReuseTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 300 * 1024 + 7;

    private string File => files.Get("reuse/file.bin", FileSize);

    private static readonly byte[] Prefix = "prefix;"u8.ToArray();

    /// <summary>The body feature each request saw, in the order the requests reached the endpoint.</summary>
    private readonly ConcurrentQueue<IHttpResponseBodyFeature> _seen = new();

    private Task<SpliceTestHost> StartAsync(Action<WebApplicationBuilder>? builder = null, Func<Task>? beforeSend = null) =>
        SpliceTestHost.StartAsync(app =>
        {
            _ = File;
            app.MapMethods("/file", ["GET", "HEAD"], async (HttpContext context, bool? chunked) =>
            {
                _seen.Enqueue(context.Features.Get<IHttpResponseBodyFeature>()!);
                if (chunked == true)
                {
                    // Started without a length: Kestrel chunks the response, and the file falls back.
                    await context.Response.Body.WriteAsync(Prefix);
                    await context.Response.Body.FlushAsync();
                }
                if (beforeSend is not null)
                {
                    await beforeSend();
                }
                await context.Response.SendFileAsync(File, context.RequestAborted);
            });
        }, configureBuilder: builder);

    [Fact]
    public async Task OneKeepAliveConnectionReusesItsFeatureAndEachRequestGetsItsOwnResponse()
    {
        await using var host = await StartAsync();
        string expected = TestFiles.Sha256(File);
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            // Zero-copy, then headers only, then a chunked fallback, then zero-copy again: each after a different kind.
            string chunkedExpected = TestFiles.Sha256([.. Prefix, .. System.IO.File.ReadAllBytes(File)]);
            foreach ((string request, bool head, string body) in new[]
            {
                (RawHttpConnection.Get("/file"), false, expected),
                (RawHttpConnection.Get("/file", method: "HEAD"), true, TestFiles.Sha256([])),
                (RawHttpConnection.Get("/file?chunked=true"), false, chunkedExpected),
                (RawHttpConnection.Get("/file"), false, expected),
            })
            {
                await connection.SendAsync(request);
                RawHttpResponse response = await connection.ReadResponseAsync(head);
                Assert.Equal(200, response.StatusCode);
                response.AssertServedBySplice();
                Assert.Equal(body, TestFiles.Sha256(response.Body));
            }
        }
        await using (RawHttpConnection other = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await other.SendAsync(RawHttpConnection.Get("/file"));
            Assert.Equal(expected, TestFiles.Sha256((await other.ReadResponseAsync()).Body));
        }

        IHttpResponseBodyFeature[] seen = _seen.ToArray();
        Assert.Equal(5, seen.Length);
        Assert.IsType<SpliceResponseBodyFeature>(seen[0]);
        Assert.All(seen[1..4], feature => Assert.Same(seen[0], feature));
        Assert.NotSame(seen[0], seen[4]);
        await host.Metrics.AssertEventuallyAsync(3, m => m.ZeroCopyResponses);
        await host.Metrics.AssertEventuallyAsync(3 * FileSize, m => m.ZeroCopyBytes);
        Assert.Equal(1, host.Metrics.Fallbacks(FallbackReasons.Chunked));
        Assert.Equal(1, host.Metrics.AllFallbacks);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task ConcurrentHttp2StreamsOfOneConnectionEachGetTheirOwnFeature()
    {
        // Both streams must be inside the endpoint at once before either sends: they overlap, as HTTP/2's do.
        var bothArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int arrived = 0;
        await using var host = await StartAsync(
            builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(listen =>
                listen.Protocols = Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2)),
            beforeSend: () =>
            {
                if (Interlocked.Increment(ref arrived) == 2)
                {
                    bothArrived.TrySetResult();
                }
                return bothArrived.Task.WaitAsync(Waits.Response);
            });
        using HttpClient client = host.CreateClient(HttpVersion.Version20); // h2c with prior knowledge, one connection
        byte[][] bodies = await Task.WhenAll(client.GetByteArrayAsync("/file"), client.GetByteArrayAsync("/file")).WaitAsync(Waits.Response);

        Assert.All(bodies, body => Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(body)));
        IHttpResponseBodyFeature[] seen = _seen.ToArray();
        Assert.Equal(2, seen.Length);
        Assert.All(seen, feature => Assert.IsType<SpliceResponseBodyFeature>(feature));
        Assert.NotSame(seen[0], seen[1]);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        await Bytes.EventuallyAsync(() => host.Metrics.Fallbacks(FallbackReasons.Protocol) == 2, "both streams fall back for the protocol");
        host.Logs.AssertNoErrors();
    }
}
