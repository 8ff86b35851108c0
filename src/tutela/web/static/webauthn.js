// Passkeys and security keys in the console (W3C WebAuthn): the server's options are
// base64url JSON; the browser's API wants ArrayBuffers. Nothing here is secret.
(function () {
  "use strict";
  function bytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    return Uint8Array.from(atob(b64), function (c) { return c.charCodeAt(0); });
  }
  function text(buffer) {
    var s = "";
    new Uint8Array(buffer).forEach(function (b) { s += String.fromCharCode(b); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function say(id, message) {
    var out = document.getElementById(id);
    if (out) { out.textContent = message; out.hidden = false; }
  }

  async function register(button) {
    // A passkey signs in on its own; a security key (the default) follows the password.
    var kind = button.dataset.kind || "security_key";
    var answer = await fetch("/api/v1/factors/webauthn/options", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ kind: kind })
    });
    var body = await answer.json();
    if (!answer.ok) { say("webauthn-error", body.detail || "That did not work."); return; }
    var options = body.options;
    options.challenge = bytes(options.challenge);
    options.user.id = bytes(options.user.id);
    (options.excludeCredentials || []).forEach(function (c) { c.id = bytes(c.id); });
    var made;
    try {
      made = await navigator.credentials.create({ publicKey: options });
    } catch (e) {
      say("webauthn-error", "No passkey was added."); return;
    }
    var label = document.getElementById("webauthn-label");
    var sent = await fetch("/api/v1/factors/webauthn", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        ceremony: body.ceremony,
        label: (label && label.value.trim()) || (kind === "passkey" ? "Passkey" : "Security key"),
        credential: {
          id: made.id,
          rawId: text(made.rawId),
          type: made.type,
          response: {
            clientDataJSON: text(made.response.clientDataJSON),
            attestationObject: text(made.response.attestationObject),
            transports: made.response.getTransports ? made.response.getTransports() : []
          },
          clientExtensionResults: made.getClientExtensionResults()
        }
      })
    });
    if (!sent.ok) { say("webauthn-error", (await sent.json()).detail || "No passkey was added."); return; }
    // Back to the page that asked: the customers' or the employees' security page.
    window.location.assign(button.dataset.next || "/account/security");
  }

  async function authenticate(button) {
    var options = JSON.parse(button.dataset.options);
    options.challenge = bytes(options.challenge);
    (options.allowCredentials || []).forEach(function (c) { c.id = bytes(c.id); });
    var got;
    try {
      got = await navigator.credentials.get({ publicKey: options });
    } catch (e) {
      say("webauthn-error", "The security key did not answer."); return;
    }
    var form = document.getElementById("webauthn-form");
    form.elements.webauthn.value = JSON.stringify(assertion(got));
    form.submit();
  }

  function assertion(got) {
    return {
      id: got.id,
      rawId: text(got.rawId),
      type: got.type,
      response: {
        clientDataJSON: text(got.response.clientDataJSON),
        authenticatorData: text(got.response.authenticatorData),
        signature: text(got.response.signature),
        userHandle: got.response.userHandle ? text(got.response.userHandle) : null
      },
      clientExtensionResults: got.getClientExtensionResults()
    };
  }

  // Step-up (C7) with a passkey: for accounts whose only factor is one, such as the
  // employees whose role requires WebAuthn (R4).
  async function stepUp(button) {
    var started = await fetch("/api/v1/auth/step-up/options", { method: "POST" });
    if (started.status !== 200) { say("stepup-error", "No passkey or security key to confirm with."); return; }
    var body = await started.json();
    var options = body.options;
    options.challenge = bytes(options.challenge);
    (options.allowCredentials || []).forEach(function (c) { c.id = bytes(c.id); });
    var got;
    try {
      got = await navigator.credentials.get({ publicKey: options });
    } catch (e) {
      say("stepup-error", "The security key did not answer."); return;
    }
    var sent = await fetch("/api/v1/auth/step-up", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ceremony: body.ceremony, webauthn: assertion(got) })
    });
    if (!sent.ok) { say("stepup-error", (await sent.json()).detail || "That did not confirm it is you."); return; }
    window.location.assign(button.dataset.next || "/account/security");
  }

  // Usernameless: fresh options with no credential list, so the browser offers whichever
  // passkey this device holds for the site.
  async function passkey(button) {
    var answer = await fetch(button.dataset.options, { method: "POST" });
    var body = await answer.json();
    if (!answer.ok) { say("webauthn-error", body.detail || "That did not work."); return; }
    var options = body.options;
    options.challenge = bytes(options.challenge);
    (options.allowCredentials || []).forEach(function (c) { c.id = bytes(c.id); });
    var got;
    try {
      got = await navigator.credentials.get({ publicKey: options });
    } catch (e) {
      say("webauthn-error", "No passkey answered. Sign in with your email and password instead."); return;
    }
    var form = document.getElementById("passkey-form");
    form.elements.credential.value = JSON.stringify(assertion(got));
    form.submit();
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-webauthn]");
    if (!target) { return; }
    event.preventDefault();
    var kind = target.dataset.webauthn;
    if (kind === "register") { register(target); }
    else if (kind === "passkey") { passkey(target); }
    else if (kind === "step-up") { stepUp(target); }
    else { authenticate(target); }
  });
})();
