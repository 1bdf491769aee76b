using System.Globalization;
using System.Net;
using System.Text;
using Microsoft.Extensions.FileProviders;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.FaultInjection;

/// <summary>
/// Every sendmsg sends a random 1–97 byte prefix of its first vector and every sendfile at most ~1000 bytes:
/// the send pump must go on at once after each short count (no wait for an edge that never comes) and
/// resume at exactly the right byte, so every response is whole and in order.
/// </summary>
public class ShortWriteTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long LargeSize = 1024 * 1024 + 3;

    private static FaultInjectingSyscalls Injector() => new() { MaxSendMessageBytes = 97, MaxSendFileBytes = 1000 };

    private string Large => files.Get("short/large.bin", LargeSize);

    private Task<SpliceTestHost> StartAsync(FaultInjectingSyscalls syscalls)
    {
        _ = Large;
        return FaultKit.StartAsync(syscalls, app =>
        {
            app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(files.Root), ServeUnknownFileTypes = true });
            app.MapGet("/plaintext", () => "Hello, World!");
            app.MapGet("/echo/{i}", (int i) => $"response {i}");
            app.MapGet("/range", (HttpContext context, long from, long count) =>
                context.Response.SendFileAsync(Large, from, count, context.RequestAborted));
        });
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4095)]
    [InlineData(LargeSize)]
    public async Task StaticFilesArriveWhole(long size)
    {
        string name = string.Create(CultureInfo.InvariantCulture, $"short/file-{size}.bin");
        string path = files.Get(name, size);
        FaultInjectingSyscalls syscalls = Injector();
        await using SpliceTestHost host = await StartAsync(syscalls);
        using (HttpClient client = host.CreateClient())
        {
            using HttpResponseMessage response = await client.GetAsync("/" + name).WaitAsync(Waits.Response);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            TransportAssert.ServedBySplice(response);
            Assert.Equal(size, response.Content.Headers.ContentLength);
            byte[] body = await response.Content.ReadAsByteArrayAsync().WaitAsync(Waits.Response);
            Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(body));
        }
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(size, m => m.ZeroCopyBytes);
        Assert.True(syscalls.ShortenedSendMessages > 0, "No sendmsg was cut short: the test did not test anything.");
        if (size > 1000)
        {
            Assert.True(syscalls.ShortenedSendFiles > 0, "No sendfile was cut short.");
        }
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task SmallResponsesArriveWhole()
    {
        FaultInjectingSyscalls syscalls = Injector();
        await using SpliceTestHost host = await StartAsync(syscalls);
        using (HttpClient client = host.CreateClient())
        {
            for (int i = 0; i < 20; i++)
            {
                using HttpResponseMessage response = await client.GetAsync("/plaintext").WaitAsync(Waits.Short);
                TransportAssert.ServedBySplice(response);
                Assert.Equal("Hello, World!", await response.Content.ReadAsStringAsync().WaitAsync(Waits.Short));
            }
        }
        Assert.True(syscalls.ShortenedSendMessages >= 20, $"Only {syscalls.ShortenedSendMessages} sendmsg calls were cut short.");
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task SixteenPipelinedRequestsAnswerInOrder()
    {
        FaultInjectingSyscalls syscalls = Injector();
        await using SpliceTestHost host = await StartAsync(syscalls);
        // Even requests get a small text response, odd ones a different range of the file.
        static (long From, long Count) RangeOf(int i) => (i * 1013L, 3000 + i * 7L);
        var requests = new StringBuilder();
        for (int i = 0; i < 16; i++)
        {
            (long from, long count) = RangeOf(i);
            requests.Append(RawHttpConnection.Get(i % 2 == 0
                ? $"/echo/{i}"
                : string.Create(CultureInfo.InvariantCulture, $"/range?from={from}&count={count}")));
        }

        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            // One write: all sixteen are in the server's input before the first response leaves.
            await connection.SendAsync(requests.ToString());
            for (int i = 0; i < 16; i++)
            {
                RawHttpResponse response = await connection.ReadResponseAsync().WaitAsync(Waits.Response);
                Assert.Equal(200, response.StatusCode);
                response.AssertServedBySplice();
                if (i % 2 == 0)
                {
                    Assert.Equal($"response {i}", response.BodyText);
                }
                else
                {
                    (long from, long count) = RangeOf(i);
                    Assert.True(TestFiles.Sha256(Large, from, count) == TestFiles.Sha256(response.Body), $"Response {i} has the wrong bytes.");
                }
            }
        }
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        Assert.True(syscalls.ShortenedSendFiles > 0 && syscalls.ShortenedSendMessages > 0, "Nothing was cut short.");
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task RangeRequestArrivesWhole()
    {
        const long From = 1000;
        const long Count = 500_000;
        FaultInjectingSyscalls syscalls = Injector();
        await using SpliceTestHost host = await StartAsync(syscalls);
        using (HttpClient client = host.CreateClient())
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/short/large.bin");
            request.Headers.TryAddWithoutValidation("Range", $"bytes={From}-{From + Count - 1}");
            using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Waits.Response);
            Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
            TransportAssert.ServedBySplice(response);
            Assert.Equal(LargeSize, response.Content.Headers.ContentRange!.Length);
            byte[] body = await response.Content.ReadAsByteArrayAsync().WaitAsync(Waits.Response);
            Assert.Equal(TestFiles.Sha256(Large, From, Count), TestFiles.Sha256(body));
        }
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(Count, m => m.ZeroCopyBytes);
        Assert.True(syscalls.ShortenedSendFiles > 0, "No sendfile was cut short.");
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        host.Logs.AssertNoErrors();
    }
}
