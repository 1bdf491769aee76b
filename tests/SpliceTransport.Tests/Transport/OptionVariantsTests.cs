using System.Net;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>The non-default options serve correctly too: one acceptor handing out connections, inline scheduling.</summary>
public class OptionVariantsTests
{
    private const int ResponseSize = 1024 * 1024;

    [Theory]
    [InlineData(false, ApplicationSchedulingMode.ThreadPool)]
    [InlineData(true, ApplicationSchedulingMode.Inline)]
    [InlineData(false, ApplicationSchedulingMode.Inline)]
    public async Task KeepAliveLargeResponsesAndUploadsWork(bool reusePort, ApplicationSchedulingMode scheduling)
    {
        byte[] payload = new byte[ResponseSize];
        new Random(9).NextBytes(payload);
        await using var host = await SpliceTestHost.StartAsync(
            app =>
            {
                app.MapGet("/hello", () => "hello");
                app.MapGet("/big", async context =>
                {
                    // In pieces with flushes, so that the write side's back-pressure is exercised.
                    for (int offset = 0; offset < payload.Length; offset += 100_000)
                    {
                        await context.Response.Body.WriteAsync(payload.AsMemory(offset, Math.Min(100_000, payload.Length - offset)));
                    }
                });
                app.MapPost("/echo", async context =>
                {
                    using var buffer = new MemoryStream();
                    await context.Request.Body.CopyToAsync(buffer);
                    await context.Response.Body.WriteAsync(buffer.ToArray());
                });
            },
            o =>
            {
                o.ThreadCount = 2;
                o.ReusePort = reusePort;
                o.ApplicationSchedulingMode = scheduling;
            });

        using (var client = host.CreateClient())
        {
            for (int i = 0; i < 5; i++)
            {
                using var response = await client.GetAsync("/hello");
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                TransportAssert.ServedBySplice(response);
                Assert.Equal("hello", await response.Content.ReadAsStringAsync());
            }
            using (var big = await client.GetAsync("/big"))
            {
                TransportAssert.ServedBySplice(big);
                Assert.Equal(TestFiles.Sha256(payload), TestFiles.Sha256(await big.Content.ReadAsByteArrayAsync()));
            }
            using (var echo = await client.PostAsync("/echo", new ByteArrayContent(payload)))
            {
                TransportAssert.ServedBySplice(echo);
                Assert.Equal(TestFiles.Sha256(payload), TestFiles.Sha256(await echo.Content.ReadAsByteArrayAsync()));
            }
            Assert.Equal(1, host.Metrics.AcceptedConnections);
        }

        // Several connections at once, spread over both loops.
        var tasks = Enumerable.Range(0, 8).Select(async _ =>
        {
            using var client = host.CreateClient();
            using var response = await client.GetAsync("/big");
            TransportAssert.ServedBySplice(response);
            Assert.Equal(TestFiles.Sha256(payload), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        });
        await Task.WhenAll(tasks).WaitAsync(RawHttpConnection.Timeout);
        Assert.Equal(9, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
