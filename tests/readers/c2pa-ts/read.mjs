// An independent C2PA reader for the tests: @trustnxt/c2pa-ts, a TypeScript implementation
// that shares no code with c2pa-rs (which Drawbridge signs with, and c2pa-python wraps).
//
//   node read.mjs FILE TRUST_ANCHORS.pem
//
// Prints one JSON object: whether a manifest was found, the verdict, c2pa-ts's own status
// codes, the active manifest's assertions, the signer and the hard binding. Exit status 0
// whenever a report was printed (valid or not), 2 on bad arguments.
//
// Glue only, with two gaps of c2pa-ts 0.9.4 filled from the libraries it is built on
// (docs/provenance.md, "Checking a file with an independent reader"):
// - its BMFF asset accepts only the HEIF brands `heic` and `mif1` (asset/BMFF.ts,
//   `canReadBrands`), although its box reader and BMFF v2/v3 hash check are not specific
//   to HEIF; the MP4 brands are added to that set.
// - it checks each certificate against C2PA's profile but never the chain, and takes no
//   trust anchors (cose/Signature.ts, `validateCertificate`: "TODO Actually verify the
//   certificate chain"), so its `signingCredential.trusted` means "well-formed". The chain
//   from the signer to one of the given anchors is built and its signatures verified with
//   @peculiar/x509 (the X.509 library c2pa-ts itself uses); failing that is reported as
//   C2PA's `signingCredential.untrusted`.
import * as fs from 'node:fs/promises';
import { X509Certificate, X509ChainBuilder } from '@peculiar/x509';
import { BMFF } from '@trustnxt/c2pa-ts/asset';
import { CBORBox, SuperBox } from '@trustnxt/c2pa-ts/jumbf';
import { ManifestStore, ValidationResult } from '@trustnxt/c2pa-ts/manifest';

const READER = '@trustnxt/c2pa-ts 0.9.4';
const MP4_BRANDS = ['isom', 'iso2', 'mp41', 'mp42'];
const HARD_BINDINGS = ['c2pa.hash.data', 'c2pa.hash.bmff.v2', 'c2pa.hash.bmff.v3', 'c2pa.hash.boxes'];
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

for (const brand of MP4_BRANDS) BMFF.canReadBrands.add(brand);

/** CBOR values (byte strings, maps) as JSON: bytes as hex. */
function plain(value) {
    if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
    if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [String(k), plain(v)]));
    if (Array.isArray(value)) return value.map(plain);
    if (value && typeof value === 'object') {
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
    }
    return value ?? null;
}

/** An assertion's label and its decoded CBOR content, as the JUMBF layer parsed it. */
function assertionView(assertion) {
    const content = assertion.sourceBox?.contentBoxes?.[0];
    return {
        label: assertion.fullLabel,
        data: content instanceof CBORBox ? plain(content.content) : null,
    };
}

async function certificateView(certificate) {
    return {
        sha256: Buffer.from(await certificate.getThumbprint('SHA-256')).toString('hex'),
        subject: certificate.subject,
        issuer: certificate.issuer,
        serial: certificate.serialNumber,
        not_before: certificate.notBefore.toISOString(),
        not_after: certificate.notAfter.toISOString(),
    };
}

async function sameCertificate(a, b) {
    return Buffer.from(await a.getThumbprint('SHA-256')).equals(Buffer.from(await b.getThumbprint('SHA-256')));
}

/** Does the signer chain to one of the anchors? (@peculiar/x509 verifies each signature.) */
async function chainToAnchor(signature, anchors) {
    const intermediates = [];
    for (const certificate of signature.chainCertificates) {
        // An embedded self-signed root must not stand in for an anchor.
        if (!(await certificate.isSelfSigned())) intermediates.push(certificate);
    }
    const chain = await new X509ChainBuilder({ certificates: [...intermediates, ...anchors] }).build(
        signature.certificate,
    );
    const top = chain[chain.length - 1];
    let anchor = null;
    for (const candidate of anchors) {
        if (chain.length > 1 && (await sameCertificate(candidate, top))) anchor = candidate;
    }
    const current = anchor !== null && (await anchor.verify({ date: new Date() }));
    return {
        anchored: Boolean(current),
        anchor: anchor?.subject ?? null,
        chain: chain.map(certificate => certificate.subject),
        checked_by: '@peculiar/x509 X509ChainBuilder',
    };
}

async function read(path, anchorsPath) {
    const data = new Uint8Array(await fs.readFile(path));
    const anchors = ((await fs.readFile(anchorsPath, 'utf8')).match(PEM_CERTIFICATE) ?? []).map(
        pem => new X509Certificate(pem),
    );
    const report = { reader: READER, format: null, manifest_found: false, valid: false, failures: [] };
    if (!BMFF.canRead(data)) {
        report.failures.push('reader.unsupportedFormat');
        return report;
    }
    report.format = 'bmff';
    const asset = new BMFF(data);
    const jumbf = asset.getManifestJUMBF();
    if (!jumbf) return report;
    report.manifest_found = true;

    let store;
    let result;
    try {
        store = ManifestStore.read(SuperBox.fromBuffer(jumbf));
        result = await store.validate(asset);
    } catch (error) {
        result = ValidationResult.fromError(error);
    }
    report.library_validation = {
        valid: result.isValid,
        statuses: result.statusEntries.map(({ code, url, success, explanation }) => ({
            code,
            url: url ?? null,
            success,
            explanation: explanation ?? null,
        })),
    };
    report.failures = result.statusEntries.filter(entry => !entry.success).map(entry => entry.code);

    const manifest = store?.getActiveManifest();
    const signature = manifest?.signature?.signatureData;
    if (signature?.certificate) {
        report.signer = await certificateView(signature.certificate);
        report.embedded_chain = await Promise.all(signature.chainCertificates.map(certificateView));
        report.trust = await chainToAnchor(signature, anchors);
        if (!report.trust.anchored) report.failures.push('signingCredential.untrusted');
    }
    if (manifest) {
        const assertions = manifest.assertions?.assertions ?? [];
        report.active_manifest = {
            label: manifest.label ?? null,
            claim_generator: manifest.claim?.claimGeneratorName ?? null,
            assertions: assertions.map(assertionView),
        };
        report.hard_binding = assertions.map(a => a.label).find(label => HARD_BINDINGS.includes(label)) ?? null;
    }
    report.valid = result.isValid && report.trust?.anchored === true;
    return report;
}

if (process.argv.length !== 4) {
    console.error('usage: node read.mjs FILE TRUST_ANCHORS.pem');
    process.exit(2);
}
console.log(JSON.stringify(await read(process.argv[2], process.argv[3]), null, 2));
