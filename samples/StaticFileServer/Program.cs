using System.Net;
using System.Runtime;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.FileProviders;

// A static file server on SpliceTransport.
//   --root <dir>                 folder to serve (default: the wwwroot shipped with the sample); "/" serves its index.html
//   --urls <urls>                Kestrel's usual list, e.g. "http://127.0.0.1:5000;https://[::1]:5001;http://unix:/tmp/s.sock"
//   --transport splice|sockets   splice (default) or Kestrel's own socket transport, for side-by-side comparison
//   --uploads <dir>              enables PUT /upload/{name}: the body is saved as <dir>/{name} (replacing a file
//                                atomically), answered 201 {"name","length","zeroCopy","splicedBytes","fallbackReason"};
//                                on SpliceTransport a body over 128 KiB is spliced from the socket into the file; off
//                                by default
//   --max-upload-bytes <n>       the largest upload body, 413 above it (default 10 GiB)
//   --upload-fsync true|false    fsync each upload (and its folder) before answering 201 (default true)
// Kestrel's configuration keys work too, e.g. --Kestrel:EndpointDefaults:Protocols=Http2 for h2c, and so do
// SpliceTransportOptions, e.g. --SpliceTransport:ApplicationSchedulingMode=Inline.
// An https URL with no certificate configured gets a self-signed one made at start-up.
//   --perf-endpoints true        for perf/run.sh only, off by default: maps GET /perf/gc, which forces a full
//                                compacting GC and answers with the managed heap size as JSON, and GET /perf/jit
//                                (how many methods the JIT has compiled so far), and GET /perf/threadpool
//                                (work items the thread pool has completed so far, for perf/profile.sh).
//                                Never expose them.

var builder = WebApplication.CreateBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);

string transport = builder.Configuration["transport"] ?? "splice";
switch (transport)
{
    case "splice":
        // Every option can be set from configuration, e.g. --SpliceTransport:ThreadCount=2.
        builder.WebHost.UseSpliceTransport(options => builder.Configuration.GetSection("SpliceTransport").Bind(options));
        break;
    case "sockets":
        break;
    default:
        Console.Error.WriteLine($"--transport must be 'splice' or 'sockets', not '{transport}'.");
        return 2;
}

string root = Path.GetFullPath(builder.Configuration["root"] ?? Path.Combine(AppContext.BaseDirectory, "wwwroot"));
if (!Directory.Exists(root))
{
    Console.Error.WriteLine($"--root '{root}' is not a directory.");
    return 2;
}

string? uploads = builder.Configuration["uploads"];
if (uploads is not null && !Directory.Exists(uploads))
{
    Console.Error.WriteLine($"--uploads '{uploads}' is not a directory.");
    return 2;
}
long maxUploadBytes = Uploads.DefaultMaxBytes;
if (builder.Configuration["max-upload-bytes"] is { } maxText
    && (!long.TryParse(maxText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out maxUploadBytes) || maxUploadBytes <= 0))
{
    Console.Error.WriteLine($"--max-upload-bytes must be a positive number of bytes, not '{maxText}'.");
    return 2;
}
bool uploadFsync = builder.Configuration.GetValue("upload-fsync", defaultValue: true);

builder.WebHost.ConfigureKestrel(kestrel =>
{
    kestrel.ConfigureHttpsDefaults(https => https.ServerCertificate ??= SelfSignedCertificate.Create());
});

var app = builder.Build();

app.MapGet("/plaintext", () => Results.Text("Hello, World!", "text/plain"));
if (builder.Configuration.GetValue<bool>("perf-endpoints"))
{
    app.MapGet("/perf/gc", PerfEndpoints.CollectAndMeasure);
    app.MapGet("/perf/jit", PerfEndpoints.JitProgress);
    app.MapGet("/perf/threadpool", PerfEndpoints.ThreadPoolProgress);
}
if (uploads is not null)
{
    var upload = new Uploads(Path.GetFullPath(uploads), maxUploadBytes, uploadFsync);
    app.MapPut("/upload/{name}", upload.SaveAsync);
}
var files = new PhysicalFileProvider(root);
// A request for a folder ("/" first of all) gets its index.html, so a new user's first request finds a page.
// UseDefaultFiles only rewrites the path; UseStaticFiles after it serves the file, zero-copy like any other. It
// runs for folder URLs (ending in '/') only, as nginx's index does: on any other URL it would look the path up as
// a folder first, one failed stat(2) on every file served. A folder named without its slash is redirected below.
app.UseWhen(context => context.Request.Path.Value is { } path && path.EndsWith('/'),
    folder => folder.UseDefaultFiles(new DefaultFilesOptions { FileProvider = files, RedirectToAppendTrailingSlash = false }));
app.UseStaticFiles(new StaticFileOptions
{
    FileProvider = files,
    ServeUnknownFileTypes = true,
    DefaultContentType = "application/octet-stream",
});
// Not a file: a folder named without its trailing slash is redirected to it (what UseDefaultFiles does on every
// URL), so its index.html is found; anything else is a 404. The folder lookup is paid by misses only.
app.Use(async (context, next) =>
{
    if (HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method))
    {
        string path = context.Request.Path.Value ?? "";
        if (path.Length > 1 && !path.EndsWith('/') && files.GetDirectoryContents(path).Exists)
        {
            context.Response.StatusCode = StatusCodes.Status301MovedPermanently;
            context.Response.Headers.Location = context.Request.PathBase + path + "/" + context.Request.QueryString;
            return;
        }
    }
    await next(context);
});

app.Lifetime.ApplicationStarted.Register(() =>
    Console.WriteLine($"StaticFileServer ({transport}) serving {root} on {string.Join(", ", app.Urls)}"));

app.Run();
return 0;

/// <summary>
/// PUT /upload/{name}, mapped with --uploads DIR: the body is saved as DIR/{name} with SaveBodyToFileAsync, which
/// splices it from the socket into the file where it can, and otherwise streams it through the body reader. The file
/// is written under a temporary name and renamed into place only once the whole body has arrived, so an existing
/// file is replaced atomically or not at all.
/// </summary>
internal sealed class Uploads(string folder, long maxBytes, bool flushToDisk)
{
    /// <summary>10 GiB: large enough for any file the sample is likely to be sent, small enough to bound a mistake.</summary>
    public const long DefaultMaxBytes = 10L * 1024 * 1024 * 1024;

    /// <summary>NAME_MAX on Linux file systems: a longer name could never be created.</summary>
    private const int MaxNameLength = 255;

    public async Task<IResult> SaveAsync(HttpContext context, string name)
    {
        if (NameProblem(name) is { } problem)
        {
            return Results.Text(problem, statusCode: StatusCodes.Status400BadRequest);
        }
        // This endpoint's limit replaces Kestrel's (30 MB by default); Kestrel answers 413 from a Content-Length
        // above it before the body is read, and stops a chunked body when it passes it.
        if (context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = maxBytes;
        }
        try
        {
            SpliceTransport.UploadResult saved = await context.Request.SaveBodyToFileAsync(Path.Combine(folder, name), flushToDisk, context.RequestAborted);
            return Results.Json(new { name, length = saved.BytesWritten, zeroCopy = saved.ZeroCopy, splicedBytes = saved.SplicedBytes, fallbackReason = saved.FallbackReason },
                statusCode: StatusCodes.Status201Created);
        }
        catch (BadHttpRequestException ex)
        {
            // Too large (413), incomplete or too slow: Kestrel's own status and words; nothing was saved.
            return Results.Text(ex.Message, statusCode: ex.StatusCode);
        }
    }

    /// <summary>Why <paramref name="name"/> is not an upload name (one path segment of [A-Za-z0-9._-], not starting with a dot), or null.</summary>
    private static string? NameProblem(string name)
    {
        if (name.Length is 0 or > MaxNameLength)
        {
            return $"The upload name must be 1 to {MaxNameLength} characters long; '{name}' has {name.Length}.";
        }
        if (name[0] == '.')
        {
            return $"The upload name '{name}' starts with a dot; hidden names (and '.', '..') are refused.";
        }
        foreach (char c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('.' or '_' or '-'))
            {
                return $"The upload name '{name}' contains '{c}'; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed.";
            }
        }
        return null;
    }
}

/// <summary>
/// GET /perf/gc and GET /perf/jit, mapped only with --perf-endpoints true (perf/run.sh). /perf/gc: perf/run.sh
/// reads the managed heap before and while it holds idle connections. A blocking, compacting full GC (twice,
/// around the finalizers) leaves only live objects, so the difference is what the connections keep alive.
/// </summary>
internal static class PerfEndpoints
{
    public static IResult CollectAndMeasure()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GCMemoryInfo info = GC.GetGCMemoryInfo(GCKind.FullBlocking);
        ReadOnlySpan<GCGenerationInfo> generations = info.GenerationInfo;
        return Results.Json(new
        {
            totalMemoryBytes = GC.GetTotalMemory(forceFullCollection: false),   // live objects
            heapSizeBytes = info.HeapSizeBytes,                                 // live objects plus fragmentation
            fragmentedBytes = info.FragmentedBytes,
            committedBytes = info.TotalCommittedBytes,
            sizeAfterBytes = new
            {
                gen0 = generations[0].SizeAfterBytes,
                gen1 = generations[1].SizeAfterBytes,
                gen2 = generations[2].SizeAfterBytes,
                loh = generations[3].SizeAfterBytes,
                poh = generations[4].SizeAfterBytes,
            },
            workingSetBytes = Environment.WorkingSet,
        });
    }

    /// <summary>
    /// Methods compiled so far (every tier counts: tier 0, instrumented, tier 1, OSR). perf/run.sh's warm-up
    /// waits until this stops growing, i.e. until tiered compilation is done with the code the load runs.
    /// </summary>
    public static IResult JitProgress() => Results.Json(new
    {
        compiledMethods = System.Runtime.JitInfo.GetCompiledMethodCount(),
        compilationTimeMs = System.Runtime.JitInfo.GetCompilationTime().TotalMilliseconds,
    });

    /// <summary>
    /// Work items the thread pool has completed since start (every queued callback and continuation counts,
    /// including this request's own), and the managed bytes allocated since start. perf/ab.sh and perf/profile.sh
    /// read it before and after a counted run: the differences divided by the responses are the pool hops (issue
    /// #10) and the bytes allocated per response, counts that the machine's load cannot move.
    /// </summary>
    public static IResult ThreadPoolProgress() => Results.Json(new
    {
        completedWorkItems = ThreadPool.CompletedWorkItemCount,
        pendingWorkItems = ThreadPool.PendingWorkItemCount,
        threads = ThreadPool.ThreadCount,
        // Not precise: a precise count stops every thread; the few KiB each thread's allocation context holds
        // unreported are nothing beside a run's gigabytes.
        allocatedBytes = GC.GetTotalAllocatedBytes(precise: false),
    });
}

/// <summary>A self-signed certificate for localhost, so https URLs work on a machine with no dev certificate.</summary>
internal static class SelfSignedCertificate
{
    private static readonly TimeSpan Validity = TimeSpan.FromDays(30);

    public static X509Certificate2 Create()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(IPAddress.Loopback);
        names.AddIpAddress(IPAddress.IPv6Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        DateTimeOffset now = DateTimeOffset.UtcNow;
        using X509Certificate2 certificate = request.CreateSelfSigned(now.AddMinutes(-5), now.Add(Validity));
        // Re-imported so that the private key is usable by SslStream on Linux.
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pfx), password: null);
    }
}

/// <summary>Exposed for WebApplicationFactory-based tests.</summary>
public partial class Program;
