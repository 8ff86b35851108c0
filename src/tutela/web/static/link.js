// The sign-in link carries its token in the URL fragment, which browsers never send to a
// server or write to its logs; copy it into the form that the person submits.
(function () {
  var token = decodeURIComponent(window.location.hash.slice(1));
  document.getElementById("link-token").value = token;
  history.replaceState(null, "", window.location.pathname);
})();
