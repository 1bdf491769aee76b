using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.FileProviders;

// A static file server on SpliceTransport.
//   --root <dir>                 folder to serve (default: the wwwroot shipped with the sample); "/" serves its index.html
//   --urls <urls>                Kestrel's usual list, e.g. "http://127.0.0.1:5000;https://[::1]:5001;http://unix:/tmp/s.sock"
//   --transport splice|sockets   splice (default) or Kestrel's own socket transport, for side-by-side comparison
// Kestrel's configuration keys work too, e.g. --Kestrel:EndpointDefaults:Protocols=Http2 for h2c, and so do
// SpliceTransportOptions, e.g. --SpliceTransport:ApplicationSchedulingMode=Inline.
// An https URL with no certificate configured gets a self-signed one made at start-up.

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

builder.WebHost.ConfigureKestrel(kestrel =>
{
    kestrel.ConfigureHttpsDefaults(https => https.ServerCertificate ??= SelfSignedCertificate.Create());
});

var app = builder.Build();

app.MapGet("/plaintext", () => Results.Text("Hello, World!", "text/plain"));
var files = new PhysicalFileProvider(root);
// A request for a folder ("/" first of all) gets its index.html, so a new user's first request finds a page.
// UseDefaultFiles only rewrites the path; UseStaticFiles after it serves the file, zero-copy like any other.
app.UseDefaultFiles(new DefaultFilesOptions { FileProvider = files });
app.UseStaticFiles(new StaticFileOptions
{
    FileProvider = files,
    ServeUnknownFileTypes = true,
    DefaultContentType = "application/octet-stream",
});

app.Lifetime.ApplicationStarted.Register(() =>
    Console.WriteLine($"StaticFileServer ({transport}) serving {root} on {string.Join(", ", app.Urls)}"));

app.Run();
return 0;

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
